-- grain: one row per (run_id, question_id) answered more than once; zero rows when each question of a run
-- was answered exactly once.
with

answers as (

    select * from stg_answers

),

final as (

    select
        run_id,
        question_id,
        count(*) as n_rows

    from answers
    group by run_id, question_id
    having count(*) > 1

)

select * from final
