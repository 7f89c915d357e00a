"""Every SQL statement of the chat: one statement on each side of Letta, the per-user lease, history pages.

The turn path runs single statements (data-modifying CTEs run once, in one transaction): one round trip to
start a turn, one to store it.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg

from service.db import Database
from service.errors import DomainError
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

# A turn starts in one round trip: the rate-limit hit; the profile; the lease if the hit was allowed and the
# agent is ready; the user's message if the lease was taken. $5 content, $6 bucket, $7 limit, $8 window, $9 the
# message's id (chosen by the service, so that Letta's request can carry it as its otid before this returns).
BEGIN_TURN = f"""
    with hit as (select * from private.rate_limit_hit($1, $6, $7, $8)),
    profile as ({PROFILE_SELECT} where p.id = $1),
    lease as ({_TAKE_LEASE.format(condition=f"from hit, profile where hit.allowed and {READY_SQL} and {_NO_ORPHAN}")}),
    message as (
        insert into public.messages (id, user_id, turn_id, role, content, status)
        select $9, $1, turn_id, 'user', $5, 'pending' from lease
        returning id
    )
    select hit.allowed, hit.remaining, hit.retry_after_seconds, (select id from message) as user_message_id,
        profile.*
    from hit left join profile on true
"""  # noqa: S608 - composed from constants only


# A finished turn, stored in one statement, once: only while its user message is still pending (the replica
# that ran it and a recovery may both try). $1 user message, $2 its status, $3 the upstream's error text (kept
# privately, for both messages), $16 the error's code (public), $4 run id,
# $5 user, $6 turn, $7 keep the reply, $8 reply text, $9 reply status, $10-$12 prompt/completion/total tokens,
# $13 cost (an estimate until reconciled: cost_final false on the message that carries it), $14 model,
# $15 Letta message id.
STORE_TURN = """
    with user_message as (
        update public.messages set status = $2, error_code = $16, letta_run_id = coalesce($4, letta_run_id),
            prompt_tokens = case when $7::boolean then null else $10::integer end,
            completion_tokens = case when $7 then null else $11::integer end,
            tokens_used = case when $7 then null else $12::integer end,
            cost = case when $7 then null else $13::numeric end,
            cost_final = case when $7 then null else false end
        where id = $1 and status = 'pending'
        returning id
    ),
    reply as (
        insert into public.messages (user_id, turn_id, role, content, status, error_code, prompt_tokens,
            completion_tokens, tokens_used, cost, cost_final, model, letta_run_id, letta_message_id)
        select $5, $6, 'assistant', $8, $9, $16, $10, $11, $12, $13, false, $14, $4, $15
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
        update public.user_profiles set last_active_at = now() where id = $5 and exists (select 1 from user_message)
    ),
    lease as (
        delete from private.chat_turn_leases where user_id = $5 and turn_id = $6
    )
    select (select id from user_message) as stored, (select id from reply) as reply_id
"""

# The turn's Letta run id, recorded as soon as an event carries it (a recovery then needs no search).
RECORD_RUN = """
    with lease as (
        update private.chat_turn_leases set letta_run_id = $3 where user_id = $1 and turn_id = $2
    )
    update public.messages set letta_run_id = $3 where id = $4 and status = 'pending'
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
LEASE_HOLDER = "select holder from private.chat_turn_leases where user_id = $1 and expires_at > now()"
LEASE_HELD = "select exists (select 1 from private.chat_turn_leases where user_id = $1 and turn_id = $2)"

# The message columns the history and the export return (an error's code; its upstream text is private).
MESSAGE_COLUMNS = (
    "id, turn_id, role, content, status, error_code, prompt_tokens, completion_tokens, tokens_used, cost, "
    "cost_final, model, created_at"
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
def encode_cursor(created_at: datetime, message_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{message_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, message_id = raw.split("|", 1)
        moment = datetime.fromisoformat(created_at)
        if moment.tzinfo is None:
            raise ValueError("a cursor's time has an offset")
        # In UTC: a made-up offset at the ends of the calendar overflows here, not in Postgres.
        return moment.astimezone(UTC), uuid.UUID(message_id)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError) as exc:
        raise DomainError("invalid_cursor", "before is not a cursor returned by this endpoint") from exc


async def messages_page(
    db: Database,
    user_id: uuid.UUID,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
    *,
    newest_first: bool = True,
) -> list[asyncpg.Record]:
    """Up to ``limit`` of the user's messages past the keyset position ``after`` (exclusive)."""
    order, compare = ("desc", "<") if newest_first else ("asc", ">")
    condition, args = (f"and (created_at, id) {compare} ($3, $4)", [*after]) if after else ("", [])
    return await db.fetch(
        f"select {MESSAGE_COLUMNS} from public.messages where user_id = $1 {condition} "  # noqa: S608
        f"order by created_at {order}, id {order} limit $2",
        user_id,
        limit,
        *args,
    )


async def all_messages(db: Database, user_id: uuid.UUID, batch: int) -> AsyncIterator[list[asyncpg.Record]]:
    """All the user's messages oldest first, in keyset batches: no long transaction, bounded memory."""
    after: tuple[datetime, uuid.UUID] | None = None
    while rows := await messages_page(db, user_id, batch, after, newest_first=False):
        yield rows
        after = (rows[-1]["created_at"], rows[-1]["id"])
