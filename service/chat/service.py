"""A chat turn: the user's message in, the agent's streamed reply out, both stored with usage and cost.

The turn runs in its own task, decoupled from whoever is listening: a client that disconnects (SSE
closed, WebSocket dropped) does not lose the reply, it is stored when Letta finishes. The listener takes
the turn's events as they come (``Turn.take``).

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
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import asyncpg

from service.billing.budgets import Billing, ensure_within_budget
from service.chat import events, store
from service.chat.errors import agent_timeout, agent_unavailable, no_such_thread, turn_in_progress
from service.chat.events import Event, TurnResult
from service.chat.journal import JournalWriter, Numbered
from service.chat.outcome import TurnIds, TurnRecorder
from service.chat.recovery import TurnRecovery
from service.clients.errors import UpstreamError
from service.clients.letta import LettaClient
from service.clients.letta_stream import LettaStream
from service.db import Database
from service.errors import DomainError, account_deleted, agent_not_ready
from service.observability.metrics import observe_turn
from service.provisioning.service import Provisioner
from service.rate_limit import CHAT_BUCKET, PostgresRateLimiter
from service.settings import Settings
from service.threads.titles import ThreadTitler
from service.users.accounts import check_account_state
from service.users.profiles import ReadyProfile, profile_from

logger = logging.getLogger("service.chat")

LEASE_RENEW_SECONDS = 5.0
RESET_HOLDER = "agent-reset"  # the lease's holder while an agent reset runs
CANCEL_WAIT_SECONDS = 2.0  # how long a cancel waits for another replica to store the turn it stopped


class Turn:
    """One running turn. Its events are numbered and kept for the client that started it until it takes them (and
    journaled for any other, ``service.chat.journal``); the work does not depend on a listener.

    One listener at a time (``take``). A list and a future made only while it waits, not an ``asyncio.Queue`` and an
    ``asyncio.Event``: a few KiB less for every open stream."""

    def __init__(
        self, turn_id: uuid.UUID, user_message_id: uuid.UUID, profile: ReadyProfile, thread_id: uuid.UUID
    ) -> None:
        self.turn_id = turn_id
        self.user_message_id = user_message_id
        self.profile = profile
        self.thread_id = thread_id
        self.first_message: str | None = None  # kept only in a thread without a title: its title is made from it
        self.pending: list[Numbered] = []  # emitted, not taken by the listener yet
        self.ended = False  # nothing is emitted after what is pending
        self._waiter: asyncio.Future[None] | None = None  # while the listener waits for an event
        self.journal: JournalWriter | None = None  # None only for a turn driven by hand
        self.seq = 0
        self.result = TurnResult()
        self.task: asyncio.Task[None] | None = None
        self.cancel_requested = False  # set by ChatService.cancel: the stream was closed on purpose
        self.started = time.perf_counter()
        self.stream: LettaStream | None = None

    def emit(self, event: Event) -> None:
        """Number the event (its ``id`` on the wire), hand it to the client, and journal it."""
        self.seq += 1
        numbered = (self.seq, *event)
        self.pending.append(numbered)
        self._wake()
        if self.journal is not None:
            self.journal.add(self.turn_id, self.profile.id, numbered)

    def end(self) -> None:
        """The last event was emitted: the listener stops after what is pending."""
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def take(self) -> tuple[list[Numbered], bool]:
        """The events emitted since the last take, together (waiting for one if there are none yet), and whether the
        turn ended after them. A cancelled wait loses nothing: the events stay pending for the next take."""
        while not self.pending and not self.ended:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        taken, self.pending = self.pending, []
        return taken, self.ended

    async def events(self) -> AsyncIterator[Numbered]:
        """The events one by one, until the turn ends."""
        while True:
            taken, ended = await self.take()
            for event in taken:
                yield event
            if ended:
                return


@dataclass(frozen=True, slots=True)
class Target:
    """Where a thread's turns go in Letta: the agent, and its conversation (None: the agent's own history)."""

    agent_id: str
    conversation_id: str | None
    # Its system message may predate the memory (compiled before the memory's last change, or when is not known):
    # recompiled before the turn. Not part of where the turn goes, which is what the targets cached here compare.
    stale: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class Began:
    """A started turn, as the statement that started it answered."""

    turn_id: uuid.UUID
    profile: ReadyProfile
    thread_id: uuid.UUID
    requested_thread_id: uuid.UUID | None  # what the client named (None: the default thread)
    is_default: bool
    thread_agent_id: str | None
    conversation_id: str | None
    branch_context: str | None
    untitled: bool
    memory_version: int  # the agent's memory now (user_profiles.memory_version)
    compiled_memory_version: int | None  # what the thread's conversation was compiled at (None: not known)


class LeaseKeeper:
    """The leases of every turn running in this replica: renewed in one statement every ``LEASE_RENEW_SECONDS``
    for all of them, which also says for which a cancel was requested (from any replica); and their Letta run ids,
    recorded as soon as seen, in one statement for all those seen meanwhile. One task, while turns run, instead of a
    task and a statement per turn: a running turn costs no timer, and the database one statement per interval."""

    def __init__(self, db: Database, cancel: Callable[[Turn], Coroutine[Any, Any, None]]) -> None:
        self.db = db
        self._cancel = cancel
        self._turns: dict[uuid.UUID, Turn] = {}  # by turn id
        self._runs: list[Turn] = []  # whose run id is still to be recorded
        self._wake = asyncio.Event()  # a run id to record, or no turn left
        self._task: asyncio.Task[None] | None = None
        self._cancels: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones

    def add(self, turn: Turn) -> None:
        self._turns[turn.turn_id] = turn
        if self._task is None or self._task.done():  # the keeper runs from the first turn until the last ends
            self._task = asyncio.get_running_loop().create_task(self._keep())

    def discard(self, turn: Turn) -> None:
        """The turn ended: its lease is no longer renewed (storing the turn releases it)."""
        self._turns.pop(turn.turn_id, None)
        if not self._turns:
            self._wake.set()

    def record_run(self, turn: Turn) -> None:
        """Record the turn's run id (``turn.result.run_id``) on its lease and user message, off the token path."""
        self._runs.append(turn)
        self._wake.set()

    async def _keep(self) -> None:
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + LEASE_RENEW_SECONDS
        while self._turns:
            if not self._runs:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(renew_at):
                        await self._wake.wait()
            self._wake.clear()
            if self._runs:
                await self._record_runs()
            if loop.time() >= renew_at:
                renew_at = loop.time() + LEASE_RENEW_SECONDS
                await self._renew()

    async def _record_runs(self) -> None:
        turns, self._runs = self._runs, []
        try:
            await self.db.execute(
                store.RECORD_RUNS,
                [turn.profile.id for turn in turns],
                [turn.turn_id for turn in turns],
                [turn.result.run_id for turn in turns],
                [turn.user_message_id for turn in turns],
            )
        except Exception as exc:  # the lease renewal records it too
            logger.warning("could not record run ids", extra={"turns": len(turns), "error": repr(exc)})

    async def _renew(self) -> None:
        turns = list(self._turns.values())
        try:
            rows = await self.db.fetch(
                store.RENEW_LEASES,
                [turn.profile.id for turn in turns],
                [turn.turn_id for turn in turns],
                [turn.result.run_id for turn in turns],
                store.LEASE_SECONDS,
            )
        except Exception as exc:  # the next renewal may work
            logger.warning("lease renewal failed", extra={"turns": len(turns), "error": repr(exc)})
            return
        for row in rows:
            turn = self._turns.get(row["turn_id"])
            if row["cancel_requested"] and turn is not None and not turn.cancel_requested:
                # Apart: a slow cancel must not hold up the next renewal of every other turn.
                task = asyncio.get_running_loop().create_task(self._cancel(turn))
                self._cancels.add(task)
                task.add_done_callback(self._cancels.discard)


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
        # Where each user's turns in a thread went last time here (None: the default thread): the agent and its
        # conversation, so that Letta's request is built while Postgres starts the turn.
        self._targets: dict[tuple[uuid.UUID, uuid.UUID | None], Target] = {}
        self.titler: ThreadTitler | None = None  # titles a thread after its first reply (set by the wiring)

    # -- starting a turn ----------------------------------------------------------------------------------
    async def start(self, user_id: uuid.UUID, content: str, thread_id: uuid.UUID | None = None) -> Turn:
        """Start the user's turn in a thread (the default one when None; see the module docstring for the order);
        returns once Letta is streaming."""
        await ensure_within_budget(self.billing, str(user_id))
        user_message_id = uuid.uuid4()
        begin = asyncio.ensure_future(self._begin_turn(user_id, content, user_message_id, thread_id))
        await asyncio.sleep(0)  # the statement goes out
        # While Postgres starts the turn, build Letta's request for where this thread's turns went last time (a reset
        # or a new conversation changes the target: the statement's row says which it is). Its otid is our message's
        # id. No recompile is started beside the statement: only its row says whether one is needed (the memory
        # versions), and overlapping the statement's ~2 ms saved little of a recompile's ~40 ms.
        otid = str(user_message_id)
        known = self._targets.get((user_id, thread_id))
        request = self.letta.turn_request(known.agent_id, content, otid, known.conversation_id) if known else None
        began = await begin
        turn = Turn(began.turn_id, user_message_id, began.profile, began.thread_id)
        if began.untitled:
            turn.first_message = content
        # The lease is renewed, and a cancel reaches the turn, from now on: under load, opening Letta's stream has
        # taken longer than a lease lasts, and a lease left to expire meanwhile let the recovery fail a turn that
        # was still running (its reply then had no row to go to).
        self._leases.add(turn)
        self._local[began.profile.id] = turn
        try:
            target = await self._target(began)
            if request is None or target != known or began.branch_context:
                request = self.letta.turn_request(
                    target.agent_id, content, otid, target.conversation_id, began.branch_context
                )
            if target.conversation_id is not None:
                await self._recompile(turn, target.conversation_id, began.memory_version, stale=target.stale)
            stream = await self.letta.open_stream(request)
        except BaseException as exc:
            self._leases.discard(turn)
            self._local.pop(began.profile.id, None)
            if not isinstance(exc, UpstreamError):
                raise  # the lease expires and the recovery settles the message
            if exc.timed_out:
                # Letta took the message but did not start answering: stop its run before the lease is
                # released, so that a resend does not run beside it.
                await self._stop_letta_run(turn)
            turn.result.fail("agent_timeout" if exc.timed_out else "agent_unavailable", str(exc)[:1000])
            # The message is kept as failed, counted, and the lease released.
            await self.recorder.store(self._ids(turn), turn.result, None)
            raise (agent_timeout(turn.turn_id) if exc.timed_out else agent_unavailable(turn.turn_id)) from exc
        turn.stream = stream
        if turn.cancel_requested:  # stopped while the stream was opening: stop the run that has just started
            await self._stop_letta_run(turn)
            with contextlib.suppress(Exception):
                await stream.close()
        turn.journal = self.journal
        turn.emit(
            (
                "turn",
                {
                    "turn_id": str(turn.turn_id),
                    "user_message_id": str(user_message_id),
                    "thread_id": str(turn.thread_id),
                },
            )
        )
        turn.task = asyncio.get_running_loop().create_task(self._run(turn, stream))
        self._turns.add(turn.task)
        turn.task.add_done_callback(self._turns.discard)
        turn.task.add_done_callback(lambda _: self._local.pop(began.profile.id, None))
        return turn

    async def _target(self, began: Began) -> Target:
        """Where the turn goes in Letta: the agent's own history for the default thread (Letta recompiles it after a
        memory edit itself), else the thread's conversation, stale if the memory may have changed since it was
        compiled, or opened on the user's current agent when it has none there yet (a new thread, or the agent was
        reset or rebuilt since): compiled from the memory as it is now."""
        agent_id = began.profile.agent_id
        if began.is_default:
            target = Target(agent_id, None)
        elif began.conversation_id and began.thread_agent_id == agent_id:
            stale = began.compiled_memory_version != began.memory_version
            target = Target(agent_id, began.conversation_id, stale=stale)
        else:
            conversation_id = await self.letta.create_conversation(agent_id)
            await self.db.execute(
                store.SET_CONVERSATION, began.thread_id, agent_id, conversation_id, began.memory_version
            )
            target = Target(agent_id, conversation_id)
        if len(self._targets) >= 10_000:
            self._targets.clear()
        self._targets[(began.profile.id, began.requested_thread_id)] = target
        return target

    async def _recompile(self, turn: Turn, conversation_id: str, memory_version: int, *, stale: bool) -> None:
        """Render the memory into a stale conversation (Letta does not after an edit, ARCHITECTURE.md §7), and have
        the turn record the version it is compiled at: ``memory_version``, read before the recompile, so that an edit
        made meanwhile leaves the conversation behind and the next turn recompiles it again."""
        if stale:
            await self.letta.recompile_conversation(conversation_id)
        turn.result.compiled_memory_version = memory_version

    async def _begin_turn(
        self, user_id: uuid.UUID, content: str, user_message_id: uuid.UUID, thread_id: uuid.UUID | None
    ) -> Began:
        """Rate limit, profile, thread, lease and the stored user message in one round trip."""
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
                thread_id,
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
        if row["thread_id"] is None:
            raise no_such_thread()
        if row["user_message_id"] is None:
            raise await self._busy(user_id)
        return Began(
            turn_id=turn_id,
            profile=profile,
            thread_id=row["thread_id"],
            requested_thread_id=thread_id,
            is_default=row["is_default"],
            thread_agent_id=row["thread_agent_id"],
            conversation_id=row["letta_conversation_id"],
            branch_context=row["branch_context"],
            untitled=row["untitled"],
            memory_version=row["memory_version"],
            compiled_memory_version=row["compiled_memory_version"],
        )

    # -- the per-user lease, also held by an agent reset ----------------------------------------------------
    async def acquire_lease(self, user_id: uuid.UUID, holder: str | None = None) -> uuid.UUID:
        """Take the user's one-at-a-time lease (``turn_in_progress`` if a live one exists); returns its id."""
        lease_id = uuid.uuid4()
        if not await store.take_lease(self.db, user_id, lease_id, holder or self.holder):
            raise await self._busy(user_id)
        return lease_id

    async def _busy(self, user_id: uuid.UUID) -> DomainError:
        """Why the user's lease is taken (read only on this refusal path): a reply (in which thread), or an agent
        reset."""
        row = await self.db.fetchrow(store.LEASE_HOLDER, user_id)
        if row is not None and row["holder"] == RESET_HOLDER:
            return DomainError("reset_in_progress")
        return turn_in_progress(row["thread_id"] if row is not None else None)

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
        result = turn.result
        connection_lost = False
        run_recorded = False
        try:
            async for letta_event in stream:
                event = events.apply(result, letta_event)
                if result.run_id and not run_recorded:
                    run_recorded = True
                    self._leases.record_run(turn)
                if event is not None:
                    turn.emit(event)
            events.settle(result, cancelled=turn.cancel_requested)
        except Exception as exc:  # never leave a turn without an outcome
            if turn.cancel_requested:  # we closed the stream ourselves
                result.status = "cancelled"
            elif isinstance(exc, UpstreamError):
                # No HTTP status: the connection broke (an in-stream error event carries the stream's 200).
                connection_lost = exc.status is None
                result.fail(events.upstream_failure_code(str(exc), exc.status), str(exc))
            else:
                logger.exception("turn crashed", extra={"turn_id": str(turn.turn_id)})
                result.fail("internal", type(exc).__name__)
        finally:
            self._leases.discard(turn)
            with contextlib.suppress(Exception):
                await stream.close()
        if connection_lost:
            await self._stop_letta_run(turn)  # Letta may still be working on it; the lease is still ours
        await self._finish(turn)

    @cached_property
    def _leases(self) -> LeaseKeeper:
        """The leases of the turns running here, renewed together; a cancel requested for one is acted on here."""
        return LeaseKeeper(self.db, self.cancel)

    async def cancel(self, turn: Turn) -> None:
        """Stop a turn running in this process: cancel the Letta run, stop reading its stream."""
        if turn.cancel_requested or turn.result.status != "pending":
            return
        turn.cancel_requested = True
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
            if turn.first_message is not None and result.status == "complete" and self.titler is not None:
                self.titler.title_later(ids.user_id, turn.thread_id, turn.first_message)
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
        turn.end()
        observe_turn(turn)
        logger.info(
            "turn finished",
            extra={
                "turn_id": str(turn.turn_id),
                "status": result.status,
                "total_tokens": result.total_tokens,
                "duration_ms": round((time.perf_counter() - turn.started) * 1000, 1),
            },
        )
