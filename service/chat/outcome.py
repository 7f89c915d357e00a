"""Storing a turn's outcome: its tokens, its estimated cost, and the one statement that records it.

Used by the replica that ran the turn and by a recovery that finishes a turn whose replica died. The
statement applies once (only while the user's message is pending), so both may try. While the database is
briefly unreachable, storing is retried for a bounded time; past that the turn is left to recovery.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal

from service.billing.budgets import Billing
from service.chat import store
from service.chat.events import TurnResult
from service.clients.letta import LettaClient
from service.clients.retry import backoff_delay
from service.db import DATABASE_UNAVAILABLE, Database
from service.observability.metrics import observe_outcome

logger = logging.getLogger("service.chat")

STORE_ATTEMPTS = 8  # ~10 s of backoff in all: a database restart, not an outage


@dataclass(frozen=True, slots=True)
class TurnIds:
    user_id: uuid.UUID
    turn_id: uuid.UUID
    user_message_id: uuid.UUID
    model: str


@dataclass(frozen=True, slots=True)
class Stored:
    applied: bool  # False: the turn had already been stored (by the other of its replica and a recovery)
    reply_id: uuid.UUID | None


class TurnRecorder:
    def __init__(self, db: Database, letta: LettaClient, billing: Billing) -> None:
        self.db = db
        self.letta = letta
        self.billing = billing

    async def estimate_cost(self, result: TurnResult, model: str) -> Decimal | None:
        """Fill in tokens from Letta's run record when the stream broke before its totals, and price them.
        The estimate is replaced by what LiteLLM charged once reconciled (``service.billing.reconcile``)."""
        if result.total_tokens == 0 and result.run_id:
            # The LLM may have been called and billed before the stream broke: take Letta's count of the run.
            try:
                usage = await self.letta.run_usage(result.run_id)
                result.prompt_tokens, result.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
                result.total_tokens = usage["total_tokens"]
            except Exception as exc:  # a malformed answer too: the SDK raises parse errors as they come
                logger.warning("run usage unavailable", extra={"run_id": result.run_id, "error": repr(exc)})
        try:
            prices = await self.billing.prices(model)
        except Exception as exc:
            logger.warning("prices unavailable; the cost is filled in by reconciliation", extra={"error": repr(exc)})
            return None
        return prices.cost(result.prompt_tokens, result.completion_tokens) if prices else None

    async def store(self, ids: TurnIds, result: TurnResult, cost: Decimal | None) -> Stored:
        """Record the outcome in one statement (user message, reply, the day's usage, last activity, the memory
        versions, the lease released), retrying while the database is unreachable. Raises what the last attempt
        raised."""
        keep_reply = result.status in ("complete", "cancelled") or bool(result.text)
        failed = result.status == "failed"
        args = (
            ids.user_message_id,
            "failed" if failed else "complete",
            result.error_message[:1000] if failed and result.error_message else None,
            result.run_id,
            ids.user_id,
            ids.turn_id,
            keep_reply,
            result.text,
            result.status,
            result.prompt_tokens,
            result.completion_tokens,
            result.total_tokens,
            cost,
            ids.model,
            result.letta_message_id,
            (result.error_code or "agent_error") if failed else None,
            result.memory_may_have_changed,
            result.compiled_memory_version,
        )
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                row = await self.db.fetchrow(store.STORE_TURN, *args)
                break
            except DATABASE_UNAVAILABLE as exc:
                if attempt == STORE_ATTEMPTS:
                    raise
                logger.warning("storing a turn failed; retrying", extra={"attempt": attempt, "error": repr(exc)})
                await asyncio.sleep(backoff_delay(attempt, 0.5, 2.0, floor=0.5))
        assert row is not None
        observe_outcome(result, applied=row["stored"] is not None)  # counted once, by whoever stored it
        return Stored(applied=row["stored"] is not None, reply_id=row["reply_id"])
