-- grain: one row per answer row whose status is not 'ok' / 'error', or whose error fields disagree with it:
-- an error row carries an error message and is neither valid nor correct; an ok row carries no error.
with

answers as (

    select * from stg_answers

),

final as (

    select
        run_id,
        question_id,
        status,
        error,
        is_valid,
        is_correct

    from answers
    where status is null
        or status not in ('ok', 'error')
        or (status = 'error' and (error is null or is_valid or is_correct))
        or (status = 'ok' and error is not null)

)

select * from final
