-- grain: one row per (run_a, run_b, category) with run_a < run_b, plus category 'all' for the whole run: the paired
-- comparison of two runs on the questions both answered (pair runs of the same corpus: stg_runs.corpus_checksum).
-- right_only_a / right_only_b are the discordant questions; mcnemar_p is McNemar's exact two-sided test on them
-- (binomial, n = right_only_a + right_only_b, p = 1/2), computed with lgamma. macro_f1_a / _b are each run's
-- category F1 (stg_metrics). The paired 95% bootstrap intervals of the differences come from `arfscore compare`.
with

pairs as (

    select * from answer_pairs

),

per_category as (

    select
        run_a,
        run_b,
        coalesce(category, 'all') as category,
        count(*) as n,
        avg(cast(correct_a as double)) as accuracy_a,
        avg(cast(correct_b as double)) as accuracy_b,
        count(*) filter (where correct_a and not correct_b) as right_only_a,
        count(*) filter (where correct_b and not correct_a) as right_only_b

    from pairs
    group by grouping sets ((run_a, run_b, category), (run_a, run_b))

),

with_p as (

    select
        per_category.*,
        case
            when right_only_a + right_only_b = 0 then 1.0
            else least(1.0, 2.0 * (
                select sum(exp(
                    lgamma(right_only_a + right_only_b + 1) - lgamma(i + 1) - lgamma(right_only_a + right_only_b - i + 1)
                    - (right_only_a + right_only_b) * ln(2)
                ))
                from range(0, least(right_only_a, right_only_b) + 1) as terms(i)
            ))
        end as mcnemar_p

    from per_category

),

category_f1 as (

    select run_id, case when scope = 'overall' then 'all' else key end as category, macro_f1
    from stg_metrics
    where scope in ('category', 'overall')

),

final as (

    select
        with_p.run_a,
        with_p.run_b,
        with_p.category,
        with_p.n,
        with_p.accuracy_a,
        with_p.accuracy_b,
        with_p.accuracy_b - with_p.accuracy_a as accuracy_diff,
        f1_a.macro_f1 as macro_f1_a,
        f1_b.macro_f1 as macro_f1_b,
        f1_b.macro_f1 - f1_a.macro_f1 as macro_f1_diff,
        with_p.right_only_a,
        with_p.right_only_b,
        with_p.mcnemar_p

    from with_p
    left join category_f1 as f1_a
        on with_p.run_a = f1_a.run_id and with_p.category = f1_a.category
    left join category_f1 as f1_b
        on with_p.run_b = f1_b.run_id and with_p.category = f1_b.category

)

select * from final
