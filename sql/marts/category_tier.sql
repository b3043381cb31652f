-- grain: one row per (answerer, run_id, category, tier): accuracy of one answerer on one category and tier.
-- macro_f1 is the category's macro F1 from Python (stg_metrics, scope 'category'); ARFBench defines F1 per
-- category, so it is the same on every tier row of that category. The intervals (95% cluster bootstrap) are the
-- category's; ARFBench puts every category in one tier, so a row is a whole category.
with

answers as (

    select * from stg_answers

),

category_metrics as (

    select
        run_id,
        answerer,
        key as category,
        macro_f1,
        accuracy_lo,
        accuracy_hi,
        macro_f1_lo,
        macro_f1_hi

    from stg_metrics
    where scope = 'category'

),

cell_counts as (

    select
        answerer,
        run_id,
        category,
        tier,
        count(*) as n,
        count(*) filter (where is_correct) as n_correct,
        count(*) filter (where not is_valid) as invalid

    from answers
    group by answerer, run_id, category, tier

),

final as (

    select
        cell_counts.answerer,
        cell_counts.run_id,
        cell_counts.category,
        cell_counts.tier,
        cell_counts.n,
        cell_counts.n_correct,
        cast(cell_counts.n_correct as double) / cell_counts.n as accuracy,
        category_metrics.accuracy_lo,
        category_metrics.accuracy_hi,
        cell_counts.invalid,
        category_metrics.macro_f1,
        category_metrics.macro_f1_lo,
        category_metrics.macro_f1_hi

    from cell_counts
    left join category_metrics
        on cell_counts.run_id = category_metrics.run_id
        and cell_counts.answerer = category_metrics.answerer
        and cell_counts.category = category_metrics.category

)

select * from final
