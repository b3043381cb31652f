-- grain: one row per (run_a, run_b, question_id) with run_a < run_b, for questions answered in both runs whose
-- correctness differs between them (rows that stayed right or stayed wrong are left out).
-- Filter with `where run_a = '...' and run_b = '...'`; runs are paired on question_id, so compare runs of the
-- same corpus (stg_runs.corpus_checksum).
with

answers as (

    select * from stg_answers

),

answer_pairs as (

    select
        a.run_id as run_a,
        b.run_id as run_b,
        a.answerer as answerer_a,
        b.answerer as answerer_b,
        a.question_id,
        coalesce(a.category, b.category) as category,
        coalesce(a.tier, b.tier) as tier,
        a.correct_answer,
        a.parsed_answer as answer_a,
        b.parsed_answer as answer_b,
        a.is_correct as correct_a,
        b.is_correct as correct_b

    from answers as a
    inner join answers as b
        on a.question_id = b.question_id
        and a.run_id < b.run_id

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

    from answer_pairs
    where correct_a is distinct from correct_b

)

select * from final
