-- grain: one row per answer row whose validity / correctness flags disagree with its parsed answer:
-- correct rows must be valid; is_valid <=> a parsed answer; is_correct <=> parsed answer = correct answer.
with

answers as (

    select * from stg_answers

),

final as (

    select
        run_id,
        question_id,
        parsed_answer,
        correct_answer,
        is_valid,
        is_correct

    from answers
    where (is_correct and not is_valid)
        or is_valid is distinct from (parsed_answer is not null)
        or is_correct is distinct from coalesce(parsed_answer = correct_answer, false)

)

select * from final
