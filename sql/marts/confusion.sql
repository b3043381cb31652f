-- grain: one row per (answerer, run_id, category, correct_answer, predicted): how often a truth was answered so.
-- predicted is the parsed option text, or '<invalid>' when the reply matched no option (or the row is an error).
with

answers as (

    select * from stg_answers

),

final as (

    select
        answerer,
        run_id,
        category,
        correct_answer,
        coalesce(parsed_answer, '<invalid>') as predicted,
        count(*) as n

    from answers
    group by answerer, run_id, category, correct_answer, coalesce(parsed_answer, '<invalid>')

)

select * from final
