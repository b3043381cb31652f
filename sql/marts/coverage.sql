-- grain: one row per (answerer, run_id, category): how much of the input the answers were made with.
-- full input = every variate and every step of every group of the question (variates_used = variates_total and
-- steps_used = steps_total). Answers whose answerer did not record what it saw (variates_used null) are counted
-- in n_unknown, never as full. Error rows saw nothing and count in n.
with

answers as (

    select * from stg_answers

),

per_answer as (

    select
        answerer,
        run_id,
        category,
        variates_used is not null as known,
        coalesce(variates_used = variates_total and steps_used = steps_total, false) as full_input,
        cast(variates_used as double) / nullif(variates_total, 0) as variate_share,
        cast(steps_used as double) / nullif(steps_total, 0) as step_share,
        context_policy

    from answers

),

final as (

    select
        answerer,
        run_id,
        category,
        count(*) as n,
        count(*) filter (where full_input) as n_full_input,
        cast(count(*) filter (where full_input) as double) / count(*) as full_input_share,
        count(*) filter (where not known) as n_unknown,
        avg(variate_share) as mean_variate_share,
        avg(step_share) as mean_step_share,
        string_agg(distinct context_policy, ',' order by context_policy) as context_policies

    from per_answer
    group by answerer, run_id, category

)

select * from final
