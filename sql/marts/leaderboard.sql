-- grain: one row per (answerer, run_id): how well one answerer did in one run.
-- accuracy = correct rows / all rows, computed here from the answers (error and invalid rows count as wrong);
-- it equals the Python metric (stg_metrics, scope 'overall'). macro_f1 comes from Python (binning needs it), as do
-- the 95% cluster-bootstrap intervals (accuracy_lo/hi, macro_f1_lo/hi; tasks/intervals.py).
with

answers as (

    select * from stg_answers

),

overall_metrics as (

    select
        run_id,
        answerer,
        macro_f1,
        f1_invalid,
        accuracy_lo,
        accuracy_hi,
        macro_f1_lo,
        macro_f1_hi

    from stg_metrics
    where scope = 'overall'

),

answer_counts as (

    select
        answerer,
        run_id,
        count(*) as n,
        count(*) filter (where is_correct) as n_correct,
        count(*) filter (where not is_valid) as invalid,
        count(*) filter (where status = 'error') as n_error,
        avg(latency_s) as mean_latency_s

    from answers
    group by answerer, run_id

),

final as (

    select
        answer_counts.answerer,
        answer_counts.run_id,
        answer_counts.n,
        answer_counts.n_correct,
        cast(answer_counts.n_correct as double) / answer_counts.n as accuracy,
        overall_metrics.accuracy_lo,
        overall_metrics.accuracy_hi,
        overall_metrics.macro_f1,
        overall_metrics.macro_f1_lo,
        overall_metrics.macro_f1_hi,
        answer_counts.invalid,
        overall_metrics.f1_invalid,
        answer_counts.n_error,
        answer_counts.mean_latency_s

    from answer_counts
    left join overall_metrics
        on answer_counts.run_id = overall_metrics.run_id
        and answer_counts.answerer = overall_metrics.answerer

)

select * from final
