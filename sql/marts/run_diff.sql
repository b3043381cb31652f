-- grain: one row per (run_a, run_b, question_id) with run_a < run_b, for questions answered in both runs whose
-- correctness differs between them (rows that stayed right or stayed wrong are left out).
-- Filter with `where run_a = '...' and run_b = '...'`; the pairs come from answer_pairs.
with

pairs as (

    select * from answer_pairs

),

final as (

    select
        run_a,
        run_b,
        answerer_a,
        answerer_b,
        question_id,
        category,
        tier,
        correct_answer,
        answer_a,
        answer_b,
        correct_a,
        correct_b,
        correct_a is distinct from correct_b as changed,
        case when correct_b then 'fixed' else 'regressed' end as change

    from pairs
    where correct_a is distinct from correct_b

)

select * from final
