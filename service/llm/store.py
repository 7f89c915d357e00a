"""Every SQL statement of the LLM proxy: one statement before the call, one after it.

The rows are ``public.llm_calls`` (migration ``20261130000500_llm_calls``); the reconciler replaces a call's cost
with LiteLLM's charge later (``service.billing.reconcile``).
"""

from __future__ import annotations

# A call starts in one round trip: the rate-limit hit; the user's LiteLLM key; the call's row ('pending') if the
# hit was allowed and the key exists. $1 user, $2 bucket, $3 limit, $4 window, $5 the call's id, $6 model,
# $7 streamed.
BEGIN_CALL = """
    with hit as (select * from private.rate_limit_hit($1, $2, $3, $4)),
    key as (select litellm_key from private.litellm_keys where user_id = $1),
    call as (
        insert into public.llm_calls (id, user_id, model, stream)
        select $5, $1, $6, $7 from hit, key where hit.allowed
        returning id
    )
    select hit.allowed, hit.remaining, hit.retry_after_seconds, (select litellm_key from key) as litellm_key,
        (select id from call) as call_id
    from hit
"""

# A call's outcome, stored once (only while it is pending), with its tokens and cost in the day's usage (the day
# the call started, as the reconciler counts it). $1 call, $2 status, $3 error code, $4 LiteLLM's response id,
# $5 its call id, $6-$8 prompt/completion/total tokens, $9 cost (LiteLLM's figure or an estimate: not final),
# $10 the client went away before the end.
FINISH_CALL = """
    with call as (
        update public.llm_calls set status = $2, error_code = $3, request_id = $4, litellm_call_id = $5,
            prompt_tokens = $6, completion_tokens = $7, total_tokens = $8, cost = $9, client_disconnected = $10,
            finished_at = now()
        where id = $1 and status = 'pending'
        returning user_id, created_at
    ),
    usage as (
        insert into public.usage_metrics (user_id, date, prompt_tokens, completion_tokens, total_tokens, total_cost)
        select user_id, (created_at at time zone 'utc')::date, coalesce($6::integer, 0), coalesce($7::integer, 0),
            coalesce($8::integer, 0), coalesce($9::numeric, 0)
        from call
        where $8::integer is not null or $9::numeric is not null
        on conflict (user_id, date) do update set
            prompt_tokens = usage_metrics.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = usage_metrics.completion_tokens + excluded.completion_tokens,
            total_tokens = usage_metrics.total_tokens + excluded.total_tokens,
            total_cost = usage_metrics.total_cost + excluded.total_cost
    )
    select count(*) from call
"""

USER_KEY = "select litellm_key from private.litellm_keys where user_id = $1"
