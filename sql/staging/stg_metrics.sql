-- grain: one row per (run_id, answerer, scope, key): a metric group computed in Python (tasks/metrics.py).
-- scope is 'overall' (key 'all'), 'category' (key = category) or 'tier' (key = tier).
-- source: results/metrics/run_id=R/metrics.parquet; the metrics_glob placeholder becomes a quoted string literal.
with

source as (

    select * from read_parquet(
        {metrics_glob},
        hive_partitioning = true,
        hive_types = {'run_id': varchar},
        union_by_name = true
    )

),

final as (

    select
        cast(run_id as varchar) as run_id,
        cast(answerer as varchar) as answerer,
        cast(scope as varchar) as scope,
        cast(key as varchar) as key,
        cast(n as bigint) as n,
        cast(n_correct as bigint) as n_correct,
        cast(accuracy as double) as accuracy,
        cast(macro_f1 as double) as macro_f1,
        cast(invalid as bigint) as invalid,
        cast(f1_invalid as bigint) as f1_invalid,
        cast(accuracy_lo as double) as accuracy_lo,
        cast(accuracy_hi as double) as accuracy_hi,
        cast(macro_f1_lo as double) as macro_f1_lo,
        cast(macro_f1_hi as double) as macro_f1_hi,
        cast(bootstrap as bigint) as bootstrap

    from source

)

select * from final
