-- grain: one row per run_id: how the run was configured, on which corpus, when, and how many answers it wrote.
-- source: results/runs/run_id=R/run.parquet; the runs_glob placeholder is replaced by a quoted string literal.
with

source as (

    select * from read_parquet(
        {runs_glob},
        hive_partitioning = true,
        hive_types = {'run_id': varchar},
        union_by_name = true
    )

),

final as (

    select
        cast(run_id as varchar) as run_id,
        cast(answerer as varchar) as answerer,
        cast(corpus as varchar) as corpus,
        cast(corpus_checksum as varchar) as corpus_checksum,
        cast(config_json as varchar) as config_json,
        cast(versions_json as varchar) as versions_json,
        cast(started_at as timestamptz) as started_at,
        cast(ended_at as timestamptz) as ended_at,
        cast(n_questions as bigint) as n_questions,
        cast(n_ok as bigint) as n_ok,
        cast(n_error as bigint) as n_error,
        cast(manifest_json as varchar) as manifest_json

    from source

)

select * from final
