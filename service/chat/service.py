"""A chat turn: the user's message in, the agent's streamed reply out, both stored with usage and cost.

The turn runs in its own task, decoupled from whoever is listening: a client that disconnects (SSE
closed, WebSocket dropped) does not lose the reply, it is stored when Letta finishes. Listeners read
the turn's events from a queue.

Order of work, so nothing is lost:
1. budget check (402, from the cache);
2. one statement (it is on the path to the first token) records the chat rate-limit hit (429), reads the
   profile (503 if the agent is not ready), takes the per-user lease (409) and stores the user's message
   (``pending``), each part only if the one before allowed it; Letta's request is built meanwhile;
3. Letta's stream is opened; failing here is a 503 for the caller and a ``failed`` user message;
4. events are relayed; the lease is renewed and polled for a cancel request while they flow;
5. one statement stores the reply (tokens, cost, run id), completes the user message, adds to the day's
   ``usage_metrics`` and releases the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg

from service.billing.budgets import Billing, ensure_within_budget
from service.chat import events, store
from service.chat.errors import agent_timeout, agent_unavailable, turn_in_progress
from service.chat.events import Event, TurnResult
from service.chat.journal import JournalWriter, Numbered
from service.chat.outcome import TurnIds, TurnRecorder
from service.chat.recovery import TurnRecovery
from service.clients.errors import UpstreamError
from service.clients.letta import LettaClient
from service.clients.letta_stream import LettaStream
from service.db import Database
from service.errors import DomainError, account_deleted, agent_not_ready
from service.provisioning.service import Provisioner
from service.rate_limit import CHAT_BUCKET, PostgresRateLimiter
from service.settings import Settings
from service.users.accounts import check_account_state
from service.users.profiles import ReadyProfile, profile_from

logger = logging.getLogger("service.chat")

LEASE_RENEW_SECONDS = 5.0
RESET_HOLDER = "agent-reset"  # the lease's holder while an agent reset runs
CANCEL_WAIT_SECONDS = 2.0  # how long a cancel waits for another replica to store the turn it stopped


class Turn:
    """One running turn. Its events are numbered and queued for the client that started it (and journaled for
    any other, ``service.chat.journal``); the work does not depend on a listener."""

    def __init__(self, turn_id: uuid.UUID, user_message_id: uuid.UUID, profile: ReadyProfile) -> None:
        self.turn_id = turn_id
        self.user_message_id = user_message_id
        self.profile = profile
        self.queue: asyncio.Queue[Numbered | None] = asyncio.Queue()
        self.journal: JournalWriter | None = None  # None only for a turn driven by hand
        self.seq = 0
        self.result = TurnResult()
        self.task: asyncio.Task[None] | None = None
        self.cancel_requested = asyncio.Event()
        self.started = time.perf_counter()
        self.stream: LettaStream | None = None
        self.run_recorder: asyncio.Task[None] | None = None

    def emit(self, event: Event) -> None:
        """Number the event (its ``id`` on the wire), hand it to the client, and journal it."""
        self.seq += 1
        numbered = (self.seq, *event)
        self.queue.put_nowait(numbered)
        if self.journal is not None:
            self.journal.add(self.turn_id, self.profile.id, numbered)

    async def events(self) -> AsyncIterator[Numbered]:
        while True:
            event = await self.queue.get()
            if event is None:
                return
            yield event


class ChatService:
    def __init__(
        self,
        db: Database,
        letta: LettaClient,
        billing: Billing,
        settings: Settings,
        rate_limiter: PostgresRateLimiter,
        provisioner: Provisioner,
    ) -> None:
        self.db = db
        self.letta = letta
        self.billing = billing
        self.settings = settings
        self.rate_limiter = rate_limiter
        self.provisioner = provisioner
        self.holder = f"replica-{uuid.uuid4().hex[:12]}"
        self.recorder = TurnRecorder(db, letta, billing)
        self.journal = JournalWriter(db)
        self.recovery = TurnRecovery(db, letta, self.recorder, settings)
        self._turns: set[asyncio.Task[None]] = set()
        self._local: dict[uuid.UUID, Turn] = {}  # running here, by user: a cancel need not wait for a renewal
        self._agent_ids: dict[uuid.UUID, str] = {}  # each user's agent at their last turn here

    # -- starting a turn ----------------------------------------------------------------------------------
    async def start(self, user_id: uuid.UUID, content: str) -> Turn:
        """Start the user's turn (see the module docstring for the order); returns once Letta is streaming."""
        await ensure_within_budget(self.billing, str(user_id))
        user_message_id = uuid.uuid4()
        begin = asyncio.ensure_future(self._begin_turn(user_id, content, user_message_id))
        await asyncio.sleep(0)  # the statement goes out
        # While Postgres starts the turn, build Letta's request for the agent this user had last time (a reset
        # replaces it: the statement's profile says which agent it is). Its otid is our message's id.
        otid = str(user_message_id)
        known_agent = self._agent_ids.get(user_id)
        request = self.letta.turn_request(known_agent, content, otid) if known_agent else None
        profile, turn_id = await begin
        if request is None or profile.agent_id != known_agent:
            request = self.letta.turn_request(profile.agent_id, content, otid)
            if len(self._agent_ids) >= 10_000:
                self._agent_ids.clear()
            self._agent_ids[user_id] = profile.agent_id
        turn = Turn(turn_id, user_message_id, profile)
        try:
            stream = await self.letta.open_stream(request)
        except UpstreamError as exc:
            if exc.timed_out:
                # Letta took the message but did not start answering: stop its run before the lease is
                # released, so that a resend does not run beside it.
                await self._stop_letta_run(turn)
            turn.result.fail("agent_timeout" if exc.timed_out else "agent_unavailable", str(exc)[:1000])
            # The message is kept as failed, counted, and the lease released.
            await self.recorder.store(self._ids(turn), turn.result, None)
            raise (agent_timeout(turn_id) if exc.timed_out else agent_unavailable(turn_id)) from exc
        turn.stream = stream
        turn.journal = self.journal
        turn.emit(("turn", {"turn_id": str(turn_id), "user_message_id": str(user_message_id)}))
        turn.task = asyncio.get_running_loop().create_task(self._run(turn, stream))
        self._turns.add(turn.task)
        self._local[profile.id] = turn
        turn.task.add_done_callback(self._turns.discard)
        turn.task.add_done_callback(lambda _: self._local.pop(profile.id, None))
        return turn

    async def _begin_turn(
        self, user_id: uuid.UUID, content: str, user_message_id: uuid.UUID
    ) -> tuple[ReadyProfile, uuid.UUID]:
        """Rate limit, profile, lease and the stored user message in one round trip: (profile, turn id)."""
        turn_id = uuid.uuid4()
        limit, window = self.rate_limiter.limit_of(CHAT_BUCKET)
        try:
            row = await self.db.fetchrow(
                store.BEGIN_TURN,
                user_id,
                turn_id,
                self.holder,
                store.LEASE_SECONDS,
                content,
                CHAT_BUCKET,
                limit,
                window,
                user_message_id,
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise account_deleted() from exc  # the user was deleted but still holds a valid token
        assert row is not None  # the rate-limit hit always returns its row
        decision = self.rate_limiter.decision(CHAT_BUCKET, row)
        if not decision.allowed:
            raise decision.error()
        row_profile = profile_from(row)
        if row_profile is not None:
            check_account_state(row_profile, self.settings)  # no lease was taken for a banned user
        profile = row_profile.as_ready() if row_profile else None
        if profile is None:
            self.provisioner.nudge(user_id)  # on demand: covers a lost webhook
            raise agent_not_ready(row_profile.agent_status if row_profile else None)
        if row["user_message_id"] is None:
            raise await self._busy(user_id)
        return profile, turn_id

    # -- the per-user lease, also held by an agent reset ----------------------------------------------------
    async def acquire_lease(self, user_id: uuid.UUID, holder: str | None = None) -> uuid.UUID:
        """Take the user's one-at-a-time lease (``turn_in_progress`` if a live one exists); returns its id."""
        lease_id = uuid.uuid4()
        if not await store.take_lease(self.db, user_id, lease_id, holder or self.holder):
            raise await self._busy(user_id)
        return lease_id

    async def _busy(self, user_id: uuid.UUID) -> DomainError:
        """Why the user's lease is taken (read only on this refusal path): a reply, or an agent reset."""
        holder = await self.db.fetchval(store.LEASE_HOLDER, user_id)
        return DomainError("reset_in_progress") if holder == RESET_HOLDER else turn_in_progress()

    async def release_lease(self, user_id: uuid.UUID, lease_id: uuid.UUID) -> None:
        await store.release_lease(self.db, user_id, lease_id)

    async def request_cancel(self, user_id: uuid.UUID) -> bool:
        """Stop the user's running turn, wherever it runs, and free the user's lease; False if none is running.

        Here: the turn is cancelled directly. On another replica: its Letta run is cancelled from here, so its
        stream ends and that replica stores it within moments; a replica that does not (it died) has its turn
        taken over and finished from Letta's record. A turn whose lease already expired is finished the same
        way."""
        local = self._local.get(user_id)
        row = await self.db.fetchrow(store.REQUEST_CANCEL, user_id)
        if local is not None:
            await self.cancel(local)
            return True
        if row is None:
            return await self.recovery.recover_user(user_id)
        if row["letta_agent_id"]:
            try:
                await self.letta.cancel_run(row["letta_agent_id"], row["letta_run_id"])
            except UpstreamError as exc:
                logger.warning("could not cancel the Letta run", extra={"error": str(exc)})
        for _ in range(int(CANCEL_WAIT_SECONDS / 0.1)):
            await asyncio.sleep(0.1)
            if not await self.db.fetchval(store.LEASE_HELD, user_id, row["turn_id"]):
                return True  # the replica running it stored it
        await self.recovery.recover_user(user_id, seize_turn=row["turn_id"])
        return True

    async def drain(self, grace_seconds: float = 30.0) -> None:
        """At shutdown, let running turns finish and store their replies."""
        if self._turns:
            await asyncio.wait(list(self._turns), timeout=grace_seconds)

    # -- running it ---------------------------------------------------------------------------------------
    async def _run(self, turn: Turn, stream: LettaStream) -> None:
        keeper = asyncio.create_task(self._keep_lease(turn))
        result = turn.result
        connection_lost = False
        try:
            async for letta_event in stream:
                event = events.apply(result, letta_event)
                if result.run_id and turn.run_recorder is None:
                    turn.run_recorder = asyncio.create_task(self._record_run(turn, result.run_id))
                if event is not None:
                    turn.emit(event)
            events.settle(result, cancelled=turn.cancel_requested.is_set())
        except Exception as exc:  # never leave a turn without an outcome
            if turn.cancel_requested.is_set():  # we closed the stream ourselves
                result.status = "cancelled"
            elif isinstance(exc, UpstreamError):
                # No HTTP status: the connection broke (an in-stream error event carries the stream's 200).
                connection_lost = exc.status is None
                result.fail(events.upstream_failure_code(str(exc), exc.status), str(exc))
            else:
                logger.exception("turn crashed", extra={"turn_id": str(turn.turn_id)})
                result.fail("internal", type(exc).__name__)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper
            with contextlib.suppress(Exception):
                await stream.close()
        if connection_lost:
            await self._stop_letta_run(turn)  # Letta may still be working on it; the lease is still ours
        await self._finish(turn)

    async def _record_run(self, turn: Turn, run_id: str) -> None:
        """The run id on the lease and the user's message, off the token path: a recovery needs no search."""
        try:
            await self.db.execute(store.RECORD_RUN, turn.profile.id, turn.turn_id, run_id, turn.user_message_id)
        except Exception as exc:  # the lease renewal records it too
            logger.warning("could not record the run id", extra={"error": repr(exc)})

    async def _keep_lease(self, turn: Turn) -> None:
        """Renew the lease while the turn runs and act on a cancel requested from any replica."""
        while True:
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            try:
                cancel = await self.db.fetchval(
                    store.RENEW_LEASE, turn.profile.id, turn.turn_id, store.LEASE_SECONDS, turn.result.run_id
                )
            except Exception as exc:  # the next renewal may work; a dead keeper would end the turn's clean-up
                logger.warning("lease renewal failed", extra={"error": repr(exc)})
                continue
            if cancel and not turn.cancel_requested.is_set():
                await self.cancel(turn)

    async def cancel(self, turn: Turn) -> None:
        """Stop a turn running in this process: cancel the Letta run, stop reading its stream."""
        if turn.cancel_requested.is_set() or turn.result.status != "pending":
            return
        turn.cancel_requested.set()
        await self._stop_letta_run(turn)
        # Stop reading: what was streamed so far is kept as the cancelled reply.
        if turn.stream is not None:
            with contextlib.suppress(Exception):
                await turn.stream.close()

    async def _stop_letta_run(self, turn: Turn) -> None:
        """Cancel the turn's Letta run (every active run of the agent if its id was not seen yet). Best effort:
        a Letta agent is not safe for concurrent messages, and the next turn may start once the lease is gone."""
        try:
            await self.letta.cancel_run(turn.profile.agent_id, turn.result.run_id)
        except UpstreamError as exc:
            logger.warning("could not cancel the Letta run", extra={"turn_id": str(turn.turn_id), "error": str(exc)})

    # -- storing it ---------------------------------------------------------------------------------------
    def _ids(self, turn: Turn) -> TurnIds:
        model = turn.profile.model or self.settings.llm_model
        return TurnIds(turn.profile.id, turn.turn_id, turn.user_message_id, model)

    async def _finish(self, turn: Turn) -> None:
        """Store the turn and tell the listener, whatever Letta, LiteLLM or Postgres answer now: every step
        before the ``done`` event catches everything, so no listener waits for ever. A turn that cannot be
        stored (after the recorder's retries) is left pending for the recovery, which stores it from Letta's
        record."""
        result, ids = turn.result, self._ids(turn)
        cost = await self.recorder.estimate_cost(result, ids.model)
        if cost:
            # Keep the cached budget current without asking LiteLLM again before the next turn.
            self.billing.add_spend(str(ids.user_id), float(cost))
        message_id: uuid.UUID | None = None
        try:
            message_id = (await self.recorder.store(ids, result, cost)).reply_id  # releases the lease too
        except Exception:
            logger.exception("could not store turn", extra={"turn_id": str(turn.turn_id)})
            result.fail("storage_failed", "the turn could not be stored")
            # Free the user at once if the database lets us; the recovery then stores the turn from Letta's
            # record (else the lease expires first).
            with contextlib.suppress(Exception):
                await self.release_lease(ids.user_id, turn.turn_id)
        if result.status == "failed":
            # The upstream's words stay in the logs and the database; the listener gets a code.
            logger.info("turn failed", extra={"turn_id": str(turn.turn_id), "error": result.error_message})
            turn.emit(("error", {"code": result.error_code or "agent_error"}))
        done = events.done_event(
            result,
            str(turn.turn_id),
            str(turn.user_message_id),
            str(message_id) if message_id else None,
            float(cost) if cost is not None else None,
        )
        if turn.journal is not None:
            # What the client saw so far is in the journal before it sees done: a resume right after is never
            # told the turn is gone.
            await turn.journal.flush()
        turn.emit(done)
        if turn.journal is not None:
            await turn.journal.flush()
        turn.queue.put_nowait(None)
        logger.info(
            "turn finished",
            extra={
                "turn_id": str(turn.turn_id),
                "status": result.status,
                "total_tokens": result.total_tokens,
                "duration_ms": round((time.perf_counter() - turn.started) * 1000, 1),
            },
        )
