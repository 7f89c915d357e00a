"""Finishing turns that lost their replica: no user message stays ``pending`` past the lease and a grace.

A turn lives in the memory of the replica that runs it. If that replica dies (or cannot store the outcome),
the turn's lease expires and any replica's recovery loop finds the pending message, takes the user's lease
for that turn, and asks Letta what became of it: Letta finishes a foreground run whose client went away and
keeps the reply, findable by the run id recorded at the first event, or by our message id, which Letta
keeps as the message's ``otid``. What Letta has is stored like any turn (``service.chat.outcome``): the
complete reply, or the turn as failed or cancelled, with tokens and an estimated cost. Letta keeps nothing
of a cancelled turn, not even the message: a message Letta never saw is ``cancelled`` if a cancel was asked
for, else ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from service.background import every
from service.chat import events, journal, store
from service.chat.events import TurnResult
from service.chat.outcome import TurnIds, TurnRecorder
from service.clients.errors import UpstreamError
from service.clients.letta import LettaClient
from service.db import Database
from service.settings import Settings

logger = logging.getLogger("service.chat.recovery")

GRACE_SECONDS = 2.0  # a message younger than this may be a turn being stored right now
INTERVAL_SECONDS = 2.0
RECHECK_SECONDS = 1.5  # a claim on a turn whose run is still going expires this soon, for the next pass
MAX_RUN_SECONDS = 150.0  # Letta's stream read timeout (120 s) and a margin: a run still going is stuck

# Pending user messages whose lease is gone or expired (for one user with $3, else for all), oldest first.
_ORPHANS = """
    select m.id as user_message_id, m.turn_id, m.user_id, m.created_at,
        coalesce(m.letta_run_id, l.letta_run_id) as run_id, coalesce(l.cancel_requested, false) as cancel_requested,
        l.turn_id as lease_turn_id, p.letta_agent_id, p.model
    from public.messages m
    join public.user_profiles p on p.id = m.user_id
    left join private.chat_turn_leases l on l.user_id = m.user_id
    where m.status = 'pending' and m.created_at < now() - make_interval(secs => $1)
      and ($3::uuid is null or m.user_id = $3)
      and ($4 or l.user_id is null or l.expires_at < now())
    order by m.created_at
    limit $2
"""

# Takes over a lease whatever its expiry (a cancel of a turn whose replica stopped answering).
_SEIZE_LEASE = """
    update private.chat_turn_leases set holder = $3, expires_at = now() + make_interval(secs => $4)
    where user_id = $1 and turn_id = $2
    returning turn_id
"""


@dataclass(frozen=True, slots=True)
class Orphan:
    ids: TurnIds
    agent_id: str | None
    run_id: str | None
    cancel_requested: bool
    created_at: datetime

    @classmethod
    def of(cls, row: asyncpg.Record, default_model: str) -> Orphan:
        ids = TurnIds(row["user_id"], row["turn_id"], row["user_message_id"], row["model"] or default_model)
        return cls(ids, row["letta_agent_id"], row["run_id"], row["cancel_requested"], row["created_at"])


class TurnRecovery:
    def __init__(self, db: Database, letta: LettaClient, recorder: TurnRecorder, settings: Settings) -> None:
        self.db = db
        self.letta = letta
        self.recorder = recorder
        self.settings = settings
        self.holder = f"recovery-{uuid.uuid4().hex[:12]}"

    async def recover_once(self, batch: int = 20) -> int:
        """Finish up to ``batch`` orphaned turns; returns how many were stored."""
        stored = 0
        for row in await self.db.fetch(_ORPHANS, GRACE_SECONDS, batch, None, False):
            stored += await self._recover(Orphan.of(row, self.settings.llm_model), force=False)
        return stored

    async def recover_user(self, user_id: uuid.UUID, *, seize_turn: uuid.UUID | None = None) -> bool:
        """Finish the user's orphaned turn now (a cancel asked for it). ``seize_turn`` takes that turn's lease
        from a replica that did not answer the cancel. True if a turn was stored."""
        rows = await self.db.fetch(_ORPHANS, 0.0, 5, user_id, seize_turn is not None)
        stored = False
        for row in rows:
            if seize_turn is not None and row["lease_turn_id"] not in (None, seize_turn):
                continue
            stored |= await self._recover(Orphan.of(row, self.settings.llm_model), force=seize_turn is not None)
        return stored

    async def _claim(self, orphan: Orphan, force: bool) -> bool:
        ids = orphan.ids
        if force and await self.db.fetchval(_SEIZE_LEASE, ids.user_id, ids.turn_id, self.holder, store.LEASE_SECONDS):
            return True
        return await store.take_lease(self.db, ids.user_id, ids.turn_id, self.holder, recovering=True)

    async def _recover(self, orphan: Orphan, *, force: bool) -> bool:
        ids = orphan.ids
        if not await self._claim(orphan, force):
            return False  # the user's lease is live: the turn's replica (or another recovery) has it
        try:
            result = await self._resolve(orphan, force=force)
        except UpstreamError as exc:
            logger.warning("recovery: Letta unavailable", extra={"turn_id": str(ids.turn_id), "error": str(exc)})
            await store.release_lease(self.db, ids.user_id, ids.turn_id)
            return False
        if result is None:
            # Letta is still working on it: hold the user off, and look again at the next pass.
            await self.db.execute(store.SHORTEN_CLAIM, ids.user_id, ids.turn_id, self.holder, RECHECK_SECONDS)
            return False
        cost = await self.recorder.estimate_cost(result, ids.model)
        stored = await self.recorder.store(ids, result, cost)
        if stored.applied:
            # Followers of the turn's stream (another device, a reload, another replica) get its end too.
            reply_id = str(stored.reply_id) if stored.reply_id else None
            done = events.done_event(
                result, str(ids.turn_id), str(ids.user_message_id), reply_id, float(cost) if cost else None
            )
            error = ("error", {"code": result.error_code or "agent_error"}) if result.status == "failed" else None
            await journal.complete(self.db, ids.turn_id, ids.user_id, done, error)
        logger.info(
            "turn recovered",
            extra={"turn_id": str(ids.turn_id), "status": result.status, "applied": stored.applied},
        )
        return stored.applied

    async def _resolve(self, orphan: Orphan, *, force: bool) -> TurnResult | None:
        """The turn's outcome from Letta's record; None while its run is still going (and not stuck)."""
        # Which tools the run called is not read back: it may have edited the memory (every thread recompiles).
        result = TurnResult(run_id=orphan.run_id, memory_edited=True)
        agent_id = orphan.agent_id
        run_id = orphan.run_id
        if run_id is None and agent_id:
            run_id = await self.letta.run_of_message(agent_id, str(orphan.ids.user_message_id))
        if run_id is None:
            if orphan.cancel_requested or force:
                result.status = "cancelled"
            else:
                result.fail("agent_unavailable", "Letta has no record of the message")
            return result
        result.run_id = run_id
        outcome = await self.letta.run_outcome(run_id)
        if outcome.status in ("created", "running"):
            age = (datetime.now(UTC) - orphan.created_at).total_seconds()
            if not force and not orphan.cancel_requested and age < MAX_RUN_SECONDS:
                return None
            if agent_id:
                with contextlib.suppress(UpstreamError):
                    await self.letta.cancel_run(agent_id, run_id)
            outcome = await self.letta.run_outcome(run_id)
        if outcome.text:
            result.content.append(outcome.text)
            result.letta_message_id = outcome.letta_message_id
        result.stop_reason = outcome.stop_reason
        if outcome.status == "failed":
            result.fail(events.error_code(outcome.stop_reason or ""), f"Letta's run failed: {outcome.stop_reason}")
        else:
            cancelled = outcome.status != "completed" or (orphan.cancel_requested and not outcome.text)
            if outcome.status == "completed" and result.stop_reason is None:
                result.stop_reason = "end_turn"
            events.settle(result, cancelled=cancelled)
        return result

    async def _pass(self) -> None:
        await self.recover_once()
        await journal.delete_old(self.db, self.settings.turn_resume_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """The loop every replica runs; it also drops the journals of turns older than ``TURN_RESUME_SECONDS``."""
        await every(INTERVAL_SECONDS, stop, self._pass, logger, "recovery")
