-- grain: one row per metric value out of range: accuracy and macro F1 must lie in [0, 1], counts must be
-- consistent (0 <= n_correct <= n, invalid <= n), in the Python metrics and in the marts.
with

python_metrics as (

    select
        'stg_metrics' as source,
        run_id,
        answerer,
        scope || ':' || key as cell,
        n,
        n_correct,
        invalid,
        accuracy,
        macro_f1

    from stg_metrics

),

leaderboard_metrics as (

    select
        'leaderboard' as source,
        run_id,
        answerer,
        'overall' as cell,
        n,
        n_correct,
        invalid,
        accuracy,
        macro_f1

    from leaderboard

),

category_tier_metrics as (

    select
        'category_tier' as source,
        run_id,
        answerer,
        category || ' / ' || tier as cell,
        n,
        n_correct,
        invalid,
        accuracy,
        macro_f1

    from category_tier

),

all_metrics as (

    select * from python_metrics
    union all
    select * from leaderboard_metrics
    union all
    select * from category_tier_metrics

),

final as (

    select *

    from all_metrics
    where (n > 0 and accuracy is null)
        or accuracy < 0 or accuracy > 1
        or macro_f1 < 0 or macro_f1 > 1
        or n < 0 or n_correct < 0 or n_correct > n
        or invalid < 0 or invalid > n

)

select * from final
