-- grain: one row per (run_id, question_id): the answer of one answerer to one question in one run.
-- source: results/answers/run_id=R/shard=S.parquet (hive partitioned; run_id is also stored in each file).
-- The answers_glob placeholder is replaced by a quoted string literal (tasks/store.py: open_views), or by an
-- empty typed select while no shard exists.
with

source as (

    select * from read_parquet(
        {answers_glob},
        hive_partitioning = true,
        hive_types = {'run_id': varchar},
        union_by_name = true
    )

),

final as (

    select
        cast(run_id as varchar) as run_id,
        cast(question_id as bigint) as question_id,
        cast(query_group as varchar) as query_group,
        cast(category as varchar) as category,
        cast(tier as varchar) as tier,
        cast(answerer as varchar) as answerer,
        cast(options as varchar[]) as options,
        cast(correct_answer as varchar) as correct_answer,
        cast(raw_response as varchar) as raw_response,
        cast(parsed_answer as varchar) as parsed_answer,
        cast(is_valid as boolean) as is_valid,
        cast(is_correct as boolean) as is_correct,
        cast(status as varchar) as status,
        cast(error as varchar) as error,
        cast(error_kind as varchar) as error_kind,
        cast(latency_s as double) as latency_s,
        cast(n_variates as bigint) as n_variates,
        cast(n_steps as bigint) as n_steps,
        cast(interval_s as bigint) as interval_s,
        cast(option_order_seed as bigint) as option_order_seed,
        cast(variates_used as bigint) as variates_used,
        cast(variates_total as bigint) as variates_total,
        cast(steps_used as bigint) as steps_used,
        cast(steps_total as bigint) as steps_total,
        cast(context_policy as varchar) as context_policy,
        cast(context_windows as bigint) as context_windows,
        cast(channels_listed as bigint) as channels_listed,
        cast(channels_total as bigint) as channels_total,
        cast(images_given as bigint) as images_given,
        cast(parse_status as varchar) as parse_status,
        cast(prompt_tokens as bigint) as prompt_tokens,
        cast(completion_tokens as bigint) as completion_tokens,
        cast(served_model as varchar) as served_model,
        cast(cost_usd as double) as cost_usd,
        cast(cache_hit as boolean) as cache_hit,
        cast(node_id as varchar) as node_id,
        cast(gpu_ids as varchar[]) as gpu_ids,
        cast(attempts as integer) as attempts,
        cast(created_at as timestamptz) as created_at

    from source

)

select * from final
