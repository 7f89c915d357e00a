"""Exact cost: what LiteLLM charged a user's key, turn by turn, replaces the estimate recorded at once.

A turn's estimate (Letta's token counts x LiteLLM's prices) misses what Letta's run usage does not count:
Letta's summarization/compaction calls (made with the user's key), and the calls of cancelled or broken
turns. LiteLLM keeps a spend record per request (``GET /spend/logs``), written in batches; once a turn has
settled (``COST_SETTLE_SECONDS`` after it ended), every replica's reconciler may:

1. copy the user's new spend records into ``private.llm_charges`` (once each, by request id), each attributed
   to the LLM proxy call (``public.llm_calls``, ``service.llm``) whose request id it carries, else to the turn
   that was running when the call started: the user's latest turn started before it (one turn at a time per
   user, so every other call the user's key made between two turns belongs to the first of them);
2. set each settled turn's and proxy call's cost to the sum of its charges, mark it final, and move the day's
   ``usage_metrics.total_cost`` by the difference from the estimate.

A charge that arrives after its turn was marked final is added to that turn and its day at once, so the sum
recorded for a user always equals the sum LiteLLM charged: per-turn attribution can shift by a call when the
two clocks disagree, the total cannot. Each step is one idempotent statement: replicas may run it together.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from service.background import every
from service.billing.budgets import Billing
from service.clients.litellm import LiteLLMClient
from service.db import Database
from service.observability.metrics import observe_cost_drift
from service.settings import Settings

logger = logging.getLogger("service.billing.reconcile")

# An LLM proxy call (service/llm) has settled once it ended COST_SETTLE_SECONDS ago; one whose replica died before
# recording its end (still pending) is settled an hour after it started.
_CALL_SETTLED = """(l.finished_at < now() - make_interval(secs => {settle})
    or (l.finished_at is null and l.created_at < now() - make_interval(secs => {settle}) - interval '1 hour'))"""

# Users with a settled turn or LLM call whose cost is still an estimate, and the start of their oldest such one.
_DUE_USERS = f"""
    select d.user_id, min(d.since) as since, k.litellm_key
    from (
        select c.user_id, u.created_at as since
        from public.messages c
        join public.messages u on u.turn_id = c.turn_id and u.role = 'user'
        where c.cost_final = false and c.created_at < now() - make_interval(secs => $1)
        union all
        select l.user_id, l.created_at from public.llm_calls l
        where l.cost_final = false and {_CALL_SETTLED.format(settle="$1")}
    ) d
    join private.litellm_keys k on k.user_id = d.user_id
    group by d.user_id, k.litellm_key
    order by min(d.since)
    limit $2
"""  # noqa: S608 - composed from constants only

# LiteLLM's records in, once each, attributed to the user's LLM proxy call whose request id they carry, else to
# the user's turn running at the time; charges that land on a turn or call already final are added to it and its
# day at once.
_RECORD_CHARGES = """
    with incoming as (
        select * from unnest($2::text[], $3::numeric[], $4::integer[], $5::integer[], $6::text[], $7::timestamptz[])
            as t(request_id, spend, prompt_tokens, completion_tokens, model, charged_at)
    ),
    matched as (
        select i.*,
            (select l.id from public.llm_calls l
             where l.user_id = $1 and (l.request_id = i.request_id or l.litellm_call_id = i.request_id)
             limit 1) as llm_call_id
        from incoming i
    ),
    inserted as (
        insert into private.llm_charges (request_id, user_id, turn_id, llm_call_id, spend, prompt_tokens,
            completion_tokens, model, charged_at)
        select i.request_id, $1,
            case when i.llm_call_id is null then
                (select m.turn_id from public.messages m
                 where m.user_id = $1 and m.role = 'user' and m.created_at <= i.charged_at
                 order by m.created_at desc limit 1)
            end,
            i.llm_call_id, i.spend, i.prompt_tokens, i.completion_tokens, i.model, i.charged_at
        from matched i
        on conflict (request_id) do nothing
        returning turn_id, llm_call_id, spend
    ),
    late as (
        update public.messages c set cost = coalesce(c.cost, 0) + x.spend
        from (select turn_id, sum(spend) as spend from inserted group by turn_id) x
        where c.turn_id = x.turn_id and c.cost_final = true
        returning c.user_id, (c.created_at at time zone 'utc')::date as day, x.spend
    ),
    late_calls as (
        update public.llm_calls l set cost = coalesce(l.cost, 0) + x.spend
        from (select llm_call_id, sum(spend) as spend from inserted group by llm_call_id) x
        where l.id = x.llm_call_id and l.cost_final = true
        returning l.user_id, (l.created_at at time zone 'utc')::date as day, x.spend
    ),
    late_days as (
        insert into public.usage_metrics (user_id, date, total_cost)
        select user_id, day, sum(spend) from (select * from late union all select * from late_calls) x
        group by user_id, day
        on conflict (user_id, date) do update set total_cost = usage_metrics.total_cost + excluded.total_cost
    )
    select count(*) from inserted
"""

# Settled turns and LLM calls of a user: cost = the sum of their charges, final; the day's total moved by the
# difference. (A call left pending by a dead replica becomes failed: its end was never seen.)
_FINALIZE = f"""
    with due as (
        select c.id, c.cost as estimate from public.messages c
        where c.user_id = $1 and c.cost_final = false and c.created_at < now() - make_interval(secs => $2)
        for update skip locked
    ),
    final as (
        update public.messages c
        set cost = coalesce((select sum(ch.spend) from private.llm_charges ch where ch.turn_id = c.turn_id), 0),
            cost_final = true
        from due where c.id = due.id
        returning c.user_id, (c.created_at at time zone 'utc')::date as day, c.cost - coalesce(due.estimate, 0) as delta
    ),
    due_calls as (
        select l.id, l.cost as estimate from public.llm_calls l
        where l.user_id = $1 and l.cost_final = false and {_CALL_SETTLED.format(settle="$2")}
        for update skip locked
    ),
    final_calls as (
        update public.llm_calls l
        set cost = coalesce((select sum(ch.spend) from private.llm_charges ch where ch.llm_call_id = l.id), 0),
            cost_final = true,
            status = case when l.status = 'pending' then 'failed' else l.status end,
            error_code = case when l.status = 'pending' then 'internal' else l.error_code end,
            finished_at = coalesce(l.finished_at, now())
        from due_calls where l.id = due_calls.id
        returning l.user_id, (l.created_at at time zone 'utc')::date as day,
            l.cost - coalesce(due_calls.estimate, 0) as delta
    ),
    days as (
        insert into public.usage_metrics (user_id, date, total_cost)
        select user_id, day, sum(delta) from (select * from final union all select * from final_calls) x
        group by user_id, day
        on conflict (user_id, date) do update set total_cost = usage_metrics.total_cost + excluded.total_cost
    )
    select (select count(*) from final) as turns, (select count(*) from final_calls) as calls,
        (select coalesce(sum(delta), 0) from final) + (select coalesce(sum(delta), 0) from final_calls) as delta
"""  # noqa: S608 - composed from constants only


def key_hash(key: str) -> str:
    """How LiteLLM stores a key (and filters spend records by it): sha256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def _charge(row: dict[str, Any]) -> tuple[str, Decimal, int | None, int | None, str | None, datetime] | None:
    request_id, started = row.get("request_id"), row.get("startTime")
    if not isinstance(request_id, str) or not isinstance(started, str):
        return None
    charged_at = datetime.fromisoformat(started.replace("Z", "+00:00"))
    if charged_at.tzinfo is None:
        charged_at = charged_at.replace(tzinfo=UTC)  # LiteLLM writes UTC
    spend = Decimal(str(row.get("spend") or 0))
    prompt, completion = row.get("prompt_tokens"), row.get("completion_tokens")
    return request_id, spend, prompt, completion, row.get("model"), charged_at


class CostReconciler:
    def __init__(self, db: Database, litellm: LiteLLMClient, billing: Billing, settings: Settings) -> None:
        self.db = db
        self.litellm = litellm
        self.billing = billing
        self.settings = settings

    async def reconcile_once(self, batch: int = 20) -> int:
        """Reconcile up to ``batch`` users' settled turns and LLM calls; returns how many became final."""
        finalized = 0
        for row in await self.db.fetch(_DUE_USERS, self.settings.cost_settle_seconds, batch):
            finalized += await self.reconcile_user(row["user_id"], row["litellm_key"], row["since"])
        return finalized

    async def reconcile_user(self, user_id: uuid.UUID, key: str, since: datetime) -> int:
        records = await self.litellm.spend_logs(
            key_hash(key), (since - timedelta(days=1)).date(), datetime.now(UTC).date()
        )
        charges = [c for c in (_charge(r) for r in records) if c is not None and c[5] >= since - timedelta(minutes=5)]
        if charges:
            columns = list(zip(*charges, strict=True))
            await self.db.fetchval(_RECORD_CHARGES, user_id, *[list(column) for column in columns])
        result = await self.db.fetchrow(_FINALIZE, user_id, self.settings.cost_settle_seconds)
        assert result is not None
        observe_cost_drift(result["delta"])
        if result["delta"]:
            # What the estimates missed (summarization, broken calls) counts against the cached budget now.
            self.billing.add_spend(str(user_id), float(result["delta"]))
        if result["turns"] or result["calls"]:
            logger.info(
                "turn costs reconciled",
                extra={
                    "user_id": str(user_id),
                    "turns": result["turns"],
                    "llm_calls": result["calls"],
                    "delta": str(result["delta"]),
                },
            )
        return int(result["turns"]) + int(result["calls"])

    async def run(self, stop: asyncio.Event) -> None:
        await every(
            self.settings.cost_reconcile_interval_seconds, stop, self.reconcile_once, logger, "cost reconciliation"
        )
