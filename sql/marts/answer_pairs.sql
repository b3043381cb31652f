-- grain: one row per (run_a, run_b, question_id) with run_a < run_b, for every question answered in both runs: the
-- pairing run_diff and paired_diff are built on (views are created in name order, so this one comes first).
-- Runs are paired on question_id: pair runs of the same corpus (stg_runs.corpus_checksum).
with

answers as (

    select * from stg_answers

),

final as (

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

)

select * from final
