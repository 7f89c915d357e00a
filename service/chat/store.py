"""Every SQL statement of the chat: one statement on each side of Letta, the per-user lease, history pages.

The turn path runs single statements (data-modifying CTEs run once, in one transaction): one round trip to
start a turn, one to store it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg

from service.db import Database
from service.users.profiles import PROFILE_SELECT, READY_SQL

LEASE_SECONDS = 30

# Takes the user's lease unless a live one exists (then returns no row), if {condition} holds. $1 user,
# $2 lease id, $3 holder, $4 seconds.
_TAKE_LEASE = """
    insert into private.chat_turn_leases (user_id, turn_id, holder, expires_at)
    select $1, $2, $3, now() + make_interval(secs => $4) {condition}
    on conflict (user_id) do update
      set turn_id = excluded.turn_id, holder = excluded.holder, expires_at = excluded.expires_at,
          letta_run_id = null, cancel_requested = false, acquired_at = now()
      where private.chat_turn_leases.expires_at < now()
    returning turn_id
"""

# A user with a pending message from a turn whose replica died gets no new turn until the recovery has stored
# it: a new turn would run beside Letta's run of the old one, and its reply would be stored before the old one.
_NO_ORPHAN = "not exists (select 1 from public.messages where user_id = $1 and status = 'pending')"

TAKE_LEASE = _TAKE_LEASE.format(condition=f"where {_NO_ORPHAN}")
TAKE_LEASE_FOR_RECOVERY = _TAKE_LEASE.format(condition="")

# A turn starts in one round trip: the rate-limit hit; the profile; the thread ($10, or the default thread when
# null) with the memory version its conversation was compiled at and the agent's memory version now (they differ:
# recompile it first); the lease if the hit was allowed, the agent is ready and the thread is the user's; the user's
# message if the lease was taken. $5 content, $6 bucket, $7 limit, $8 window, $9 the message's id (chosen by the
# service, so that Letta's request can carry it as its otid before this returns).
_BEGIN_CONDITION = f"from hit, profile, thread where hit.allowed and {READY_SQL} and {_NO_ORPHAN}"
BEGIN_TURN = f"""
    with hit as (select * from private.rate_limit_hit($1, $6, $7, $8)),
    profile as ({PROFILE_SELECT} where p.id = $1),
    thread as (
        select t.id as thread_id, t.is_default, t.letta_agent_id as thread_agent_id, t.letta_conversation_id,
            t.branch_context, t.title_source is null as untitled, t.compiled_memory_version, v.memory_version
        from public.threads t join public.user_profiles v on v.id = t.user_id
        where t.user_id = $1
          and t.id = coalesce($10::uuid, (select d.id from public.threads d where d.user_id = $1 and d.is_default))
    ),
    lease as ({_TAKE_LEASE.format(condition=_BEGIN_CONDITION)}),
    message as (
        insert into public.messages (id, user_id, thread_id, turn_id, role, content, status)
        select $9, $1, thread.thread_id, lease.turn_id, 'user', $5, 'pending' from lease, thread
        returning id
    )
    select hit.allowed, hit.remaining, hit.retry_after_seconds, (select id from message) as user_message_id,
        thread.*, profile.*
    from hit left join profile on true left join thread on true
"""  # noqa: S608 - composed from constants only


# A finished turn, stored in one statement, once: only while its user message is still pending (the replica
# that ran it and a recovery may both try). $1 user message, $2 its status, $3 the upstream's error text (kept
# privately, for both messages), $16 the error's code (public), $4 run id,
# $5 user, $6 turn, $7 keep the reply, $8 reply text, $9 reply status, $10-$12 prompt/completion/total tokens,
# $13 cost (an estimate until reconciled: cost_final false on the message that carries it), $14 model,
# $15 Letta message id, $17 the agent's memory may have changed (bumps the user's memory version: every thread's
# conversation is recompiled before its next turn), $18 the memory version the thread's conversation was compiled at
# for this turn (null: unchanged).
STORE_TURN = """
    with user_message as (
        update public.messages set status = $2, error_code = $16, letta_run_id = coalesce($4, letta_run_id),
            prompt_tokens = case when $7::boolean then null else $10::integer end,
            completion_tokens = case when $7 then null else $11::integer end,
            tokens_used = case when $7 then null else $12::integer end,
            cost = case when $7 then null else $13::numeric end,
            cost_final = case when $7 then null else false end
        where id = $1 and status = 'pending'
        returning id, thread_id
    ),
    reply as (
        insert into public.messages (user_id, thread_id, turn_id, role, content, status, error_code, prompt_tokens,
            completion_tokens, tokens_used, cost, cost_final, model, letta_run_id, letta_message_id)
        select $5, thread_id, $6, 'assistant', $8, $9, $16, $10, $11, $12, $13, false, $14, $4, $15
        from user_message where $7
        returning id
    ),
    error_detail as (
        insert into private.message_errors (message_id, detail)
        select id, $3::text from (select id from user_message union all select id from reply) failed
        where $3::text is not null
    ),
    usage as (
        insert into public.usage_metrics (user_id, date, total_messages, prompt_tokens, completion_tokens,
            total_tokens, total_cost)
        select $5, (now() at time zone 'utc')::date, case when $7 then 2 else 1 end, $10, $11, $12,
            coalesce($13::numeric, 0)
        from user_message
        on conflict (user_id, date) do update set
            total_messages = usage_metrics.total_messages + excluded.total_messages,
            prompt_tokens = usage_metrics.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = usage_metrics.completion_tokens + excluded.completion_tokens,
            total_tokens = usage_metrics.total_tokens + excluded.total_tokens,
            total_cost = usage_metrics.total_cost + excluded.total_cost
    ),
    activity as (
        update public.user_profiles set last_active_at = now(),
            memory_version = memory_version + case when $17::boolean then 1 else 0 end
        where id = $5 and exists (select 1 from user_message)
    ),
    -- The thread moves to the top of the list; a branch's transcript was given to the agent once it answered.
    thread as (
        update public.threads t set last_message_at = now(),
            branch_context = case when $9 = 'complete' then null else t.branch_context end,
            compiled_memory_version = coalesce($18::bigint, t.compiled_memory_version)
        from user_message where t.id = user_message.thread_id
    ),
    lease as (
        delete from private.chat_turn_leases where user_id = $5 and turn_id = $6
    )
    select (select id from user_message) as stored, (select id from reply) as reply_id,
        (select thread_id from user_message) as thread_id
"""

RELEASE_LEASE = "delete from private.chat_turn_leases where user_id = $1 and turn_id = $2"

# Renews a running turn's lease, records its Letta run id once seen, and says whether a cancel was asked for.
RENEW_LEASE = """
    update private.chat_turn_leases set expires_at = now() + make_interval(secs => $3),
        letta_run_id = coalesce($4, letta_run_id)
    where user_id = $1 and turn_id = $2
    returning cancel_requested
"""

# Flags the user's live turn for cancelling; what is needed to stop its Letta run from any replica.
REQUEST_CANCEL = """
    update private.chat_turn_leases l set cancel_requested = true
    from public.user_profiles p
    where l.user_id = $1 and l.expires_at > now() and p.id = l.user_id
    returning l.turn_id, l.letta_run_id, p.letta_agent_id
"""

# A recovery that found Letta's run still going looks again soon (the user stays held off meanwhile).
SHORTEN_CLAIM = """
    update private.chat_turn_leases set expires_at = now() + make_interval(secs => $4)
    where user_id = $1 and turn_id = $2 and holder = $3
"""
# Who holds the user's live lease, and the thread of the turn it runs (none for an agent reset).
LEASE_HOLDER = """
    select l.holder, m.thread_id from private.chat_turn_leases l
    left join public.messages m on m.turn_id = l.turn_id and m.role = 'user' and m.user_id = l.user_id
    where l.user_id = $1 and l.expires_at > now()
"""

# A thread's conversation on the user's current agent (opened at the thread's first turn there), compiled from the
# memory of version $4 or later.
SET_CONVERSATION = """
    update public.threads set letta_agent_id = $2, letta_conversation_id = $3, compiled_memory_version = $4
    where id = $1
"""
LEASE_HELD = "select exists (select 1 from private.chat_turn_leases where user_id = $1 and turn_id = $2)"

# The message columns the history and the export return (an error's code; its upstream text is private).
MESSAGE_COLUMNS = (
    "id, thread_id, turn_id, role, content, status, error_code, prompt_tokens, completion_tokens, tokens_used, cost, "
    "cost_final, model, created_at"
)
# ... and each message's feedback (ChatMessage.of), joined to the page once it is cut: one primary-key probe a row
# (the LIMIT keeps the lateral subquery from being flattened, which let the planner hash-join a whole seq scan of
# the feedback table to an export batch: 11-25 ms a batch instead of 1 ms, measured on 1.2 M messages).
FEEDBACK_COLUMNS = (
    "f.rating as feedback_rating, f.comment as feedback_comment, f.created_at as feedback_created_at, "
    "f.updated_at as feedback_updated_at"
)
FEEDBACK_JOIN = (
    "left join lateral (select rating, comment, created_at, updated_at from public.message_feedback "
    "where message_id = page.id limit 1) f on true"
)


async def take_lease(
    db: Database, user_id: uuid.UUID, lease_id: uuid.UUID, holder: str, *, recovering: bool = False
) -> bool:
    """The user's lease unless a live one exists (and, but for the recovery of that turn, unless a message of
    the user is still pending)."""
    statement = TAKE_LEASE_FOR_RECOVERY if recovering else TAKE_LEASE
    return await db.fetchval(statement, user_id, lease_id, holder, LEASE_SECONDS) is not None


async def release_lease(db: Database, user_id: uuid.UUID, lease_id: uuid.UUID) -> None:
    await db.execute(RELEASE_LEASE, user_id, lease_id)


# -- history: keyset pages, newest first (the export reads oldest first) --------------------------------------
async def messages_page(
    db: Database,
    user_id: uuid.UUID,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
    *,
    thread_id: uuid.UUID | None = None,
    newest_first: bool = True,
) -> list[asyncpg.Record]:
    """Up to ``limit`` of the user's messages (of one thread, or all) past the keyset position ``after``
    (exclusive)."""
    order, compare = ("desc", "<") if newest_first else ("asc", ">")
    # A thread's page is owned through its thread (one row), so that it reads the thread's index alone: with
    # "user_id = $1" on the messages too, the planner ANDs the two indexes' bitmaps and reads all of a heavy
    # user's messages to sort the thread's (57 ms instead of 0.3 ms on 200,000 messages, bench/threads.py).
    scope = (
        "thread_id = $3 and exists (select from public.threads t where t.id = $3 and t.user_id = $1)"
        if thread_id
        else "user_id = $1 and $3::uuid is null"
    )
    condition, args = (f"and (created_at, id) {compare} ($4, $5)", [*after]) if after else ("", [])
    return await db.fetch(
        f"select page.*, {FEEDBACK_COLUMNS} from ("  # noqa: S608
        f"select {MESSAGE_COLUMNS} from public.messages where {scope} {condition} "
        f"order by created_at {order}, id {order} limit $2"
        f") page {FEEDBACK_JOIN} "
        f"order by page.created_at {order}, page.id {order}",
        user_id,
        limit,
        thread_id,
        *args,
    )


async def all_messages(
    db: Database, user_id: uuid.UUID, batch: int, thread_id: uuid.UUID | None = None
) -> AsyncIterator[list[asyncpg.Record]]:
    """All the user's messages (of one thread, or all) oldest first, in keyset batches: no long transaction,
    bounded memory."""
    after: tuple[datetime, uuid.UUID] | None = None
    while rows := await messages_page(db, user_id, batch, after, thread_id=thread_id, newest_first=False):
        yield rows
        after = (rows[-1]["created_at"], rows[-1]["id"])


# -- feedback on the assistant's replies (service.chat.feedback) ------------------------------------------------
# The caller's message (no row: not theirs, or none) and, when it is an assistant's reply that is not being
# written, its feedback stored: created, or replaced. Letta must hear of it again only if the rating changed; the
# retry may send it $5 seconds from now (its own sender has that long), with all its attempts again.
# $1 message, $2 user, $3 rating, $4 comment, $5 the retry interval.
PUT_FEEDBACK = """
    with message as (
        select id, user_id, role, status from public.messages where id = $1 and user_id = $2
    ),
    saved as (
        insert into public.message_feedback as f (message_id, user_id, rating, comment, letta_retry_at)
        select id, user_id, $3, $4, now() + make_interval(secs => $5)
        from message where role = 'assistant' and status <> 'pending'
        on conflict (message_id) do update set rating = excluded.rating, comment = excluded.comment,
            letta_sent_at = case when f.rating = excluded.rating then f.letta_sent_at end,
            letta_attempts = 0, letta_retry_at = excluded.letta_retry_at
        returning rating, comment, created_at, updated_at, letta_sent_at is null as unsent
    )
    select message.role, message.status, saved.* from message left join saved on true
"""

# The same check, and the feedback removed (its Letta step, to clear it there). $1 message, $2 user.
DELETE_FEEDBACK = """
    with message as (
        select id, role, status from public.messages where id = $1 and user_id = $2
    ),
    removed as (
        delete from public.message_feedback f using message
        where f.message_id = message.id and message.role = 'assistant' and message.status <> 'pending'
        returning f.letta_step_id
    )
    select message.role, message.status, exists (select 1 from removed) as removed,
        (select letta_step_id from removed) as letta_step_id
    from message
"""

# What Letta should hold for a reply now (no row: the message is gone): its run, its step if found, the rating.
FEEDBACK_STATE = """
    select m.letta_run_id, m.letta_message_id, f.rating, f.letta_step_id
    from public.messages m left join public.message_feedback f on f.message_id = m.id
    where m.id = $1
"""

# Letta has the rating $2 (null: none) for the step $3: recorded unless the feedback changed meanwhile (then the
# answer is false and the sender goes again). $1 message.
FEEDBACK_SENT = """
    with marked as (
        update public.message_feedback set letta_sent_at = now(), letta_step_id = $3
        where message_id = $1 and rating = $2
        returning 1
    )
    select exists (select 1 from marked)
        or ($2::text is null and not exists (select 1 from public.message_feedback where message_id = $1))
"""

# The next feedback Letta does not have (its send failed, or its replica stopped first) that a retry may send now,
# claimed: locked against the other replicas' claims (skip locked), its attempt counted and its next retry moved
# ahead by $1 seconds times 2^(attempts before it), or to 'infinity' on attempt $2 (the last) or when the reply has
# no Letta run or step to send it to (``nowhere``). By the partial index of unsent feedback (migration
# 20261130001200); none due: no row.
CLAIM_UNSENT_FEEDBACK = """
    with due as (
        select f.message_id, f.letta_step_id is null and m.letta_run_id is null as nowhere
        from public.message_feedback f join public.messages m on m.id = f.message_id
        where f.letta_sent_at is null and f.letta_retry_at <= now()
        order by f.letta_retry_at
        limit 1
        for update of f skip locked
    )
    update public.message_feedback f
    set letta_attempts = f.letta_attempts + 1,
        letta_retry_at = case
            when due.nowhere or f.letta_attempts + 1 >= $2 then 'infinity'::timestamptz
            else now() + make_interval(secs => $1 * 2 ^ f.letta_attempts)
        end
    from due
    where f.message_id = due.message_id
    returning f.message_id, f.letta_attempts as attempt, due.nowhere
"""


# -- search: the user's messages that match a query, best first (migration 20261130000700_message_search) -------
# The definition the frontend's supabase.rpc('search_messages') runs too, there for auth.uid(). $1 user, $2 query,
# $3 rows, $4 and $5 the previous page's last rank and id (null: the first page), $6 a thread (null: all).
SEARCH = """
    select id, thread_id, thread_title, role, created_at, rank, snippet
    from private.search_messages_for($1, $2, $3, $4, $5, $6)
"""


async def search_messages(
    db: Database,
    user_id: uuid.UUID,
    query: str,
    limit: int,
    after: tuple[float, uuid.UUID] | None = None,
    thread_id: uuid.UUID | None = None,
    *,
    timeout_seconds: float,
) -> list[asyncpg.Record]:
    """Up to ``limit`` of the user's messages that match ``query``, ranked, past the keyset position ``after``
    (exclusive). A query the function refuses raises ``asyncpg.InvalidParameterValueError`` with its sentence; one
    still running after ``timeout_seconds`` is cancelled by Postgres (``asyncpg.QueryCanceledError``).

    The timeout is the transaction's own (SET LOCAL): it must be in force before the search statement starts, and it
    must not stay on the pooled connection. Opening the transaction and setting it is one round trip (a simple
    query of two statements; the number is an int), ending it another: +0.05-0.25 ms, measured (bench/README.md)."""
    before_rank, before_id = after or (None, None)
    milliseconds = max(1, round(timeout_seconds * 1000))
    async with db.acquire() as conn:
        await conn.execute(f"begin read only; set local statement_timeout = {milliseconds}")
        try:
            return await conn.fetch(SEARCH, user_id, query, limit, before_rank, before_id, thread_id)
        finally:
            if not conn.is_closed():
                await conn.execute("rollback")  # read-only: the same as a commit; it also ends a cancelled one


# The leases of a replica's running turns renewed together ($1 users, $2 turns, $3 their Letta run ids once seen,
# $4 seconds): which of them a cancel was asked for.
RENEW_LEASES = """
    update private.chat_turn_leases l set expires_at = now() + make_interval(secs => $4),
        letta_run_id = coalesce(r.run_id, l.letta_run_id)
    from unnest($1::uuid[], $2::uuid[], $3::text[]) as r(user_id, turn_id, run_id)
    where l.user_id = r.user_id and l.turn_id = r.turn_id
    returning l.turn_id, l.cancel_requested
"""

# The turns' Letta run ids, recorded as soon as an event carries them (a recovery then needs no search), for all the
# turns seen meanwhile at once: $1 users, $2 turns, $3 run ids, $4 their user messages.
RECORD_RUNS = """
    with run as (
        select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[]) as r(user_id, turn_id, run_id, message_id)
    ),
    lease as (
        update private.chat_turn_leases l set letta_run_id = run.run_id
        from run where l.user_id = run.user_id and l.turn_id = run.turn_id
    )
    update public.messages m set letta_run_id = run.run_id from run where m.id = run.message_id and m.status = 'pending'
"""
