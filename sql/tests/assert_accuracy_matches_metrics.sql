-- grain: one row per (answerer, run_id) whose SQL accuracy (leaderboard, from the answers) differs from the
-- Python overall accuracy (stg_metrics) by more than 1e-9, or whose row counts differ.
with

sql_accuracy as (

    select * from leaderboard

),

python_accuracy as (

    select * from stg_metrics
    where scope = 'overall'

),

final as (

    select
        sql_accuracy.answerer,
        sql_accuracy.run_id,
        sql_accuracy.n as sql_n,
        python_accuracy.n as python_n,
        sql_accuracy.accuracy as sql_accuracy,
        python_accuracy.accuracy as python_accuracy

    from sql_accuracy
    inner join python_accuracy
        on sql_accuracy.run_id = python_accuracy.run_id
        and sql_accuracy.answerer = python_accuracy.answerer
    where sql_accuracy.n <> python_accuracy.n
        or abs(sql_accuracy.accuracy - python_accuracy.accuracy) > 1e-9

)

select * from final
