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
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg

from service.billing import Billing, Budget
from service.clients.base import UpstreamError
from service.clients.letta import LettaClient
from service.errors import ProblemError
from service.profiles import PROFILE_COLUMNS, READY_SQL, Profile, profile_from
from service.provisioning.deps import account_deleted, not_ready
from service.provisioning.service import Provisioner
from service.rate_limit import CHAT_BUCKET, PostgresRateLimiter
from service.settings import Settings

logger = logging.getLogger("service.chat")

LEASE_SECONDS = 30
LEASE_RENEW_SECONDS = 5.0

Event = tuple[str, dict[str, Any]]

# Letta stop reasons that end a turn normally.
_OK_STOPS = {"end_turn", "max_steps", "no_tool_call", "requires_approval"}


@dataclass
class TurnResult:
    status: str = "pending"  # complete | failed | cancelled
    content: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    run_id: str | None = None
    letta_message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.content)


class Turn:
    """One running turn. Events are queued for whoever listens; the work does not depend on a listener."""

    def __init__(self, turn_id: uuid.UUID, user_message_id: uuid.UUID, profile: Profile) -> None:
        self.turn_id = turn_id
        self.user_message_id = user_message_id
        self.profile = profile
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.result = TurnResult()
        self.task: asyncio.Task[None] | None = None
        self.cancel_requested = asyncio.Event()
        self.started = time.perf_counter()
        self.stream: Any = None

    def emit(self, name: str, data: dict[str, Any]) -> None:
        self.queue.put_nowait((name, data))

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self.queue.get()
            if event is None:
                return
            yield event


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

_TAKE_LEASE_NOW = _TAKE_LEASE.format(condition="")

# A turn starts in one round trip: the rate-limit hit; the profile; the lease if the hit was allowed and the
# agent is ready; the user's message if the lease was taken. $5 content, $6 bucket, $7 limit, $8 window.
_BEGIN_TURN = f"""
    with hit as (select * from private.rate_limit_hit($1, $6, $7, $8)),
    profile as (select {PROFILE_COLUMNS} from public.user_profiles where id = $1),
    lease as ({_TAKE_LEASE.format(condition=f"from hit, profile where hit.allowed and {READY_SQL}")}),
    message as (
        insert into public.messages (user_id, turn_id, role, content, status)
        select $1, turn_id, 'user', $5, 'pending' from lease
        returning id
    )
    select hit.allowed, hit.remaining, hit.retry_after_seconds, (select id from message) as user_message_id,
        profile.*
    from hit left join profile on true
"""  # noqa: S608 - composed from constants only


# A finished turn, stored in one statement (data-modifying CTEs all run, once, in one transaction). $1 user
# message, $2 its status, $3 error (both messages), $4 run id, $5 user, $6 turn, $7 keep the reply, $8 reply
# text, $9 reply status, $10-$12 prompt/completion/total tokens, $13 cost, $14 model, $15 Letta message id.
_STORE_TURN = """
    with user_message as (
        update public.messages set status = $2, error = $3, letta_run_id = $4 where id = $1
    ),
    reply as (
        insert into public.messages (user_id, turn_id, role, content, status, error, prompt_tokens,
            completion_tokens, tokens_used, cost, model, letta_run_id, letta_message_id)
        select $5, $6, 'assistant', $8, $9, $3, $10, $11, $12, $13, $14, $4, $15
        where $7
        returning id
    ),
    usage as (
        insert into public.usage_metrics (user_id, date, total_messages, prompt_tokens, completion_tokens,
            total_tokens, total_cost)
        values ($5, (now() at time zone 'utc')::date, case when $7 then 2 else 1 end, $10, $11, $12,
            coalesce($13::numeric, 0))
        on conflict (user_id, date) do update set
            total_messages = usage_metrics.total_messages + excluded.total_messages,
            prompt_tokens = usage_metrics.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = usage_metrics.completion_tokens + excluded.completion_tokens,
            total_tokens = usage_metrics.total_tokens + excluded.total_tokens,
            total_cost = usage_metrics.total_cost + excluded.total_cost
    ),
    activity as (
        update public.user_profiles set last_active_at = now() where id = $5
    ),
    lease as (
        delete from private.chat_turn_leases where user_id = $5 and turn_id = $6
    )
    select id from reply
"""


# The problems a turn start answers with (the OpenAPI examples are made from these too).
def turn_in_progress() -> ProblemError:
    return ProblemError(409, "a reply is still being written; wait for it or cancel it", title="Turn In Progress")


def budget_exceeded(budget: Budget) -> ProblemError:
    return ProblemError(
        402,
        f"your budget is used up: spent {budget.spend:.4f} of {budget.max_budget or 0:.4f}",
        title="Budget Exceeded",
        spend=budget.spend,
        max_budget=budget.max_budget,
        budget_reset_at=budget.budget_reset_at,
    )


def agent_unavailable(turn_id: uuid.UUID) -> ProblemError:
    return ProblemError(
        503,
        "the assistant is unreachable right now; your message was saved, please retry",
        title="Agent Unavailable",
        headers={"Retry-After": "5"},
        turn_id=str(turn_id),
    )


def agent_timeout(turn_id: uuid.UUID) -> ProblemError:
    return ProblemError(
        504,
        "the assistant did not start answering in time; the attempt was stopped and your message saved as "
        "failed, please retry",
        title="Agent Timeout",
        turn_id=str(turn_id),
    )


class ChatService:
    def __init__(
        self,
        db: asyncpg.Pool[Any],
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
        self._turns: set[asyncio.Task[None]] = set()
        self._local: dict[uuid.UUID, Turn] = {}  # running here, by user: a cancel need not wait for a renewal
        self._agent_ids: dict[uuid.UUID, str] = {}  # each user's agent at their last turn here

    # -- starting a turn ----------------------------------------------------------------------------------
    async def check_budget(self, user_id: uuid.UUID) -> None:
        try:
            budget = await self.billing.budget(str(user_id))
        except UpstreamError as exc:
            # Billing unreachable: LiteLLM itself still enforces the budget on the LLM call.
            logger.warning("budget check skipped", extra={"error": str(exc)})
            return
        if budget is not None and budget.exceeded:
            raise budget_exceeded(budget)

    async def start(self, user_id: uuid.UUID, content: str) -> Turn:
        """Start the user's turn (see the module docstring for the order); returns once Letta is streaming."""
        await self.check_budget(user_id)
        begin = asyncio.ensure_future(self._begin_turn(user_id, content))
        await asyncio.sleep(0)  # the statement goes out
        # While Postgres starts the turn, build Letta's request for the agent this user had last time (a reset
        # replaces it: the statement's profile says which agent it is).
        known_agent = self._agent_ids.get(user_id)
        request = self.letta.turn_request(known_agent, content) if known_agent else None
        profile, turn_id, user_message_id = await begin
        agent_id = profile.letta_agent_id or ""
        if request is None or agent_id != known_agent:
            request = self.letta.turn_request(agent_id, content)
            if len(self._agent_ids) >= 10_000:
                self._agent_ids.clear()
            self._agent_ids[user_id] = agent_id
        turn = Turn(turn_id, user_message_id, profile)
        try:
            stream = await self.letta.open_stream(request)
        except UpstreamError as exc:
            if exc.timed_out:
                # Letta took the message but did not start answering: stop its run before the lease is
                # released, so that a resend does not run beside it.
                await self._stop_letta_run(turn)
            await self._fail_before_stream(turn, exc)
            raise (agent_timeout(turn_id) if exc.timed_out else agent_unavailable(turn_id)) from exc
        turn.stream = stream
        turn.emit("turn", {"turn_id": str(turn_id), "user_message_id": str(user_message_id)})
        turn.task = asyncio.get_running_loop().create_task(self._run(turn, stream))
        self._turns.add(turn.task)
        self._local[profile.id] = turn
        turn.task.add_done_callback(self._turns.discard)
        turn.task.add_done_callback(lambda _: self._local.pop(profile.id, None))
        return turn

    async def acquire_lease(self, user_id: uuid.UUID, holder: str | None = None) -> uuid.UUID:
        """Take the user's one-at-a-time lease (409 if a live one exists); returns its id."""
        lease_id = uuid.uuid4()
        acquired = await self.db.fetchval(_TAKE_LEASE_NOW, user_id, lease_id, holder or self.holder, LEASE_SECONDS)
        if acquired is None:
            raise turn_in_progress()
        return lease_id

    async def _begin_turn(self, user_id: uuid.UUID, content: str) -> tuple[Profile, uuid.UUID, uuid.UUID]:
        """Rate limit, profile, lease and the stored user message in one round trip: (profile, turn, message)."""
        turn_id = uuid.uuid4()
        limit, window = self.rate_limiter.limit_of(CHAT_BUCKET)
        try:
            row = await self.db.fetchrow(
                _BEGIN_TURN, user_id, turn_id, self.holder, LEASE_SECONDS, content, CHAT_BUCKET, limit, window
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise account_deleted() from exc  # the user was deleted but still holds a valid token
        assert row is not None  # the rate-limit hit always returns its row
        decision = self.rate_limiter.decision(CHAT_BUCKET, row)
        if not decision.allowed:
            raise decision.problem()
        profile = profile_from(row)
        if profile is None or not profile.ready:
            raise not_ready(self.provisioner, user_id, profile)
        if row["user_message_id"] is None:
            raise turn_in_progress()
        return profile, turn_id, row["user_message_id"]

    async def release_lease(self, user_id: uuid.UUID, lease_id: uuid.UUID) -> None:
        await self.db.execute(
            "delete from private.chat_turn_leases where user_id = $1 and turn_id = $2", user_id, lease_id
        )

    async def request_cancel(self, user_id: uuid.UUID) -> bool:
        """Ask the user's running turn (on whichever replica) to stop; False if none is running."""
        row = await self.db.fetchval(
            "update private.chat_turn_leases set cancel_requested = true where user_id = $1 and expires_at > now() "
            "returning turn_id",
            user_id,
        )
        local = self._local.get(user_id)
        if local is not None:
            await self.cancel(local)
        # Elsewhere, the replica running the turn sees the flag when it next renews its lease.
        return row is not None

    async def drain(self, grace_seconds: float = 30.0) -> None:
        """At shutdown, let running turns finish and store their replies."""
        if self._turns:
            await asyncio.wait(list(self._turns), timeout=grace_seconds)

    # -- running it ---------------------------------------------------------------------------------------
    async def _run(self, turn: Turn, stream: Any) -> None:
        keeper = asyncio.create_task(self._keep_lease(turn))
        result = turn.result
        connection_lost = False
        try:
            await self._relay(turn, stream)
        except Exception as exc:  # never leave a turn without an outcome
            if turn.cancel_requested.is_set():  # we closed the stream ourselves
                result.status = "cancelled"
            elif isinstance(exc, UpstreamError):
                # No HTTP status: the connection broke (an in-stream error event carries the stream's 200).
                connection_lost = exc.status is None
                code = _error_code(str(exc))
                result.status = "failed"
                # The SDK raises Letta's in-stream error events too (HTTP 200): those are the agent's, not
                # a lost connection.
                if code == "budget_exceeded" or exc.status is None or exc.status >= 500:
                    result.error_code = code if code == "budget_exceeded" else "agent_unavailable"
                else:
                    result.error_code = code
                result.error_message = str(exc)
            else:
                logger.exception("turn crashed", extra={"turn_id": str(turn.turn_id)})
                result.status, result.error_code, result.error_message = "failed", "internal", type(exc).__name__
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper
            with contextlib.suppress(Exception):
                await stream.close()
        if connection_lost:
            await self._stop_letta_run(turn)  # Letta may still be working on it; the lease is still ours
        await self._finish(turn)

    async def _relay(self, turn: Turn, stream: Any) -> None:
        result = turn.result
        stop_reason: str | None = None
        async for event in stream:
            kind = getattr(event, "message_type", None)
            run_id = getattr(event, "run_id", None)
            if run_id and result.run_id is None:
                result.run_id = run_id  # recorded on the lease at its next renewal: no I/O on the hot path
            if kind == "assistant_message":
                text = _text_of(event.content)
                if text:
                    result.content.append(text)
                    result.letta_message_id = event.id
                    turn.emit("delta", {"text": text})
            elif kind == "tool_call_message":
                calls = event.tool_calls
                call = event.tool_call or (calls[0] if isinstance(calls, list) and calls else calls)
                name = getattr(call, "name", None)
                if name:  # token streaming repeats the call in fragments; the first names it
                    turn.emit("tool", {"phase": "call", "name": name, "id": getattr(call, "tool_call_id", None)})
            elif kind == "tool_return_message":
                turn.emit(
                    "tool", {"phase": "return", "name": event.name, "status": event.status, "id": event.tool_call_id}
                )
            elif kind == "usage_statistics":
                result.prompt_tokens += event.prompt_tokens or 0
                result.completion_tokens += event.completion_tokens or 0
                result.total_tokens += event.total_tokens or 0
                turn.emit(
                    "usage",
                    {
                        "prompt_tokens": result.prompt_tokens,
                        "completion_tokens": result.completion_tokens,
                        "total_tokens": result.total_tokens,
                    },
                )
            elif kind == "stop_reason":
                stop_reason = event.stop_reason
            elif kind == "error_message":
                result.error_code = _error_code(f"{event.error_type} {event.message} {event.detail or ''}")
                result.error_message = event.message
        if turn.cancel_requested.is_set() or stop_reason == "cancelled":
            result.status = "cancelled"
        elif stop_reason in _OK_STOPS and result.error_code is None:
            result.status = "complete"
        else:
            result.status = "failed"
            if result.error_code is None:
                result.error_code = _error_code(stop_reason or "")
                result.error_message = f"the agent stopped: {stop_reason or 'stream ended early'}"

    async def _keep_lease(self, turn: Turn) -> None:
        """Renew the lease while the turn runs and act on a cancel requested from any replica."""
        while True:
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            try:
                cancel = await self.db.fetchval(
                    "update private.chat_turn_leases set expires_at = now() + make_interval(secs => $3), "
                    "letta_run_id = coalesce($4, letta_run_id) "
                    "where user_id = $1 and turn_id = $2 returning cancel_requested",
                    turn.profile.id,
                    turn.turn_id,
                    LEASE_SECONDS,
                    turn.result.run_id,
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
        with contextlib.suppress(Exception):
            await turn.stream.close()

    async def _stop_letta_run(self, turn: Turn) -> None:
        """Cancel the turn's Letta run (every active run of the agent if its id was not seen yet). Best effort:
        a Letta agent is not safe for concurrent messages, and the next turn may start once the lease is gone."""
        try:
            await self.letta.cancel_run(turn.profile.letta_agent_id or "", turn.result.run_id)
        except UpstreamError as exc:
            logger.warning("could not cancel the Letta run", extra={"turn_id": str(turn.turn_id), "error": str(exc)})

    # -- storing it ---------------------------------------------------------------------------------------
    async def _finish(self, turn: Turn) -> None:
        """Store the turn and tell the listener, whatever Letta, LiteLLM or Postgres answer now: every step
        before the ``done`` event catches everything, so no turn is left without an outcome or holding its
        lease."""
        result, profile = turn.result, turn.profile
        if result.total_tokens == 0 and result.run_id:
            # The stream broke before Letta's usage totals (a failed or cancelled turn), yet the LLM may have
            # been called and billed: take the counts from Letta's record of the run.
            try:
                usage = await self.letta.run_usage(result.run_id)
                result.prompt_tokens, result.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
                result.total_tokens = usage["total_tokens"]
            except Exception as exc:  # a malformed answer too: the SDK raises parse errors as they come
                logger.warning("run usage unavailable", extra={"run_id": result.run_id, "error": repr(exc)})
        cost: Decimal | None = None
        try:
            prices = await self.billing.prices(profile.model or self.settings.llm_model)
            cost = prices.cost(result.prompt_tokens, result.completion_tokens) if prices else None
        except Exception as exc:
            logger.warning("prices unavailable; cost left empty", extra={"error": repr(exc)})
        if cost:
            # Keep the cached budget current without asking LiteLLM again before the next turn.
            self.billing.add_spend(str(profile.id), float(cost))
        message_id: uuid.UUID | None = None
        try:
            message_id = await self._store(turn, cost)  # releases the lease too
        except Exception:
            logger.exception("could not store turn", extra={"turn_id": str(turn.turn_id)})
            result.status, result.error_code = "failed", "storage_failed"
            with contextlib.suppress(Exception):
                await self.release_lease(profile.id, turn.turn_id)
        if result.status == "failed":
            code = result.error_code or "agent_error"
            # The raw upstream error stays in the database and logs; the client gets a sentence.
            turn.emit("error", {"code": code, "message": ERROR_MESSAGES.get(code, ERROR_MESSAGES["agent_error"])})
        turn.emit(
            "done",
            {
                "turn_id": str(turn.turn_id),
                "status": result.status,
                "user_message_id": str(turn.user_message_id),
                "message_id": str(message_id) if message_id else None,
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.total_tokens,
                "cost": float(cost) if cost is not None else None,
                "run_id": result.run_id,
            },
        )
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

    async def _store(self, turn: Turn, cost: Decimal | None) -> uuid.UUID | None:
        """The turn's outcome in one statement (so one transaction and one round trip before ``done``): the
        user message completed or failed, the reply stored, the day's usage added to, the profile's last
        activity, and the lease released. Returns the reply's id, if one was stored."""
        result, profile = turn.result, turn.profile
        keep_reply = result.status in ("complete", "cancelled") or bool(result.text)
        failed = result.status == "failed"
        message_id: uuid.UUID | None = await self.db.fetchval(
            _STORE_TURN,
            turn.user_message_id,
            "failed" if failed else "complete",
            result.error_message if failed else None,
            result.run_id,
            profile.id,
            turn.turn_id,
            keep_reply,
            result.text,
            result.status,
            result.prompt_tokens,
            result.completion_tokens,
            result.total_tokens,
            cost,
            profile.model or self.settings.llm_model,
            result.letta_message_id,
        )
        return message_id

    async def _fail_before_stream(self, turn: Turn, exc: UpstreamError) -> None:
        """Letta never streamed: the user's message is kept as ``failed``, counted in the day's usage, and the
        lease released, by the same statement as any finished turn."""
        turn.result.status = "failed"
        turn.result.error_message = str(exc)[:1000]
        await self._store(turn, None)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(getattr(part, "text", "") or "" for part in content)
    return ""


ERROR_MESSAGES = {
    "budget_exceeded": "your budget is used up; the reply was stopped",
    "agent_unavailable": "the assistant became unreachable while replying",
    "llm_error": "the language model failed to answer",
    "storage_failed": "the reply could not be saved",
    "internal": "an unexpected error stopped the reply",
    "agent_error": "the assistant could not finish the reply",
}


def _error_code(text: str) -> str:
    lowered = text.lower()
    # LiteLLM 1.106.2 rejects over-budget calls with type budget_exceeded ("ExceededBudget: ..."), HTTP 422.
    if any(marker in lowered for marker in ("budget_exceeded", "budget has been exceeded", "exceededbudget")):
        return "budget_exceeded"
    if "llm" in lowered or "api" in lowered:
        return "llm_error"
    return "agent_error"
