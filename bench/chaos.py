"""Chaos benchmark: chat turns while the service is SIGKILLed and restarted and Postgres goes away for a while.

``--users`` users chat at the same time over SSE (``[[slow]]`` replies, 20 words 100 ms apart, and some
``[[long 40]]``), ``--turns`` messages each. A client whose stream breaks waits a moment and sends its next
message; a refusal it can wait out (409 ``turn_in_progress``: the dead replica's lease; 503; connection
refused while the service is down) is retried with a bounded backoff. Meanwhile, at random moments while
turns are streaming, the service is SIGKILLed and restarted ``--kills`` times and Postgres (shared with Letta)
is stopped for ``--pg-outage`` seconds once. Clients keep sending (up to 3x ``--turns``) until every planned
fault has happened. Then, after the lease and a grace have passed and the costs have settled, printed:

* user messages still ``pending`` (target 0);
* Letta's record against ours: for every stored user message, the Letta user message whose ``otid`` is its id,
  its run's status and the assistant text of that run (read from Letta's database) against the turn's
  assistant row in ``public.messages`` (target: as many ``complete`` replies stored as runs Letta completed,
  0 mismatches);
* recorded vs charged per user, once every cost is final: sum of ``messages.cost`` and of
  ``usage_metrics.total_cost`` against LiteLLM's ``/user/info`` spend (target: 0 difference);
* crash -> stored outcome: for each turn whose user message was pending right after a kill, the time until
  its status is no longer pending (polled every 100 ms).

    .venv/bin/python -m bench.chaos [--users 6] [--turns 20] [--kills 4] [--pg-outage 4] [--hold 0] [--seed N]
        [--service-env KEY=VALUE ...] [--letta-env KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import httpx

from bench.chat import service_log_problems
from bench.common import (
    BenchUser,
    banner,
    entry_point,
    median,
    parse_env,
    print_table,
    provision_users,
    running_stack,
)
from devstack.doubles.scripted_model import SLOW_WORDS
from devstack.sse import aiter_sse, json_object
from devstack.stack import Stack
from service.chat.recovery import GRACE_SECONDS, INTERVAL_SECONDS
from service.chat.store import LEASE_SECONDS

LONG_WORDS = 40
SLOW_REPLY = " ".join(f"slow{i}" for i in range(1, SLOW_WORDS + 1))
LONG_REPLY = " ".join(f"word{i}" for i in range(1, LONG_WORDS + 1))
MARK = "chaos"  # in every message this benchmark sends (finds them in Letta's history)
# After the lease, a turn is recovered within the recovery's grace and one pass (jittered), plus Letta's
# answers: 15 s is ample. A message still pending after LEASE_SECONDS + GRACE is a defect.
GRACE = 15.0
STREAM_TIMEOUT = httpx.Timeout(120.0, connect=5.0, pool=None)
MESSAGE_RETRY_SECONDS = 120.0  # how long one message is retried (409/503/refused) before the client gives up
MESSAGE_RETRY_ATTEMPTS = 80
LOAD_LIMIT_SECONDS = 900.0
POLL_SECONDS = 0.1
DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


# -- the clients ------------------------------------------------------------------------------------------
@dataclass
class Attempt:
    """One message as a client saw it."""

    user: int
    content: str
    expected: str
    outcome: str = ""  # done complete/failed/cancelled | broken stream | broken before status | HTTP n | gave up
    turn_id: str | None = None
    user_message_id: str | None = None
    text: str = ""
    retries: Counter[str] = field(default_factory=Counter)


@dataclass
class Load:
    open_streams: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    done: bool = False
    chaos_done: bool = False


def _backoff(attempt: int, rng: random.Random) -> float:
    return min(4.0, 0.25 * 2.0 ** min(attempt, 5)) * rng.uniform(0.5, 1.0)


async def send_message(
    http: httpx.AsyncClient, stack: Stack, user: BenchUser, attempt: Attempt, load: Load, rng: random.Random
) -> None:
    """Send one message over SSE; retry what can be waited out, give up on it after a bounded time."""
    deadline = time.monotonic() + MESSAGE_RETRY_SECONDS
    for tries in range(MESSAGE_RETRY_ATTEMPTS):
        if time.monotonic() > deadline:
            break
        retry: str | None = None
        try:
            async with http.stream(
                "POST",
                f"{stack.config.service_url}/api/v1/chat/message",
                headers={**user.headers, "Accept": "text/event-stream"},
                json={"content": attempt.content},
                timeout=STREAM_TIMEOUT,
            ) as response:
                if response.status_code in (409, 503):
                    body = (await response.aread()).decode(errors="replace")
                    retry = f"{response.status_code} {_code(body)}"
                elif response.status_code != 200:
                    body = (await response.aread()).decode(errors="replace")
                    attempt.outcome = f"HTTP {response.status_code} {_code(body)}"
                    return
                else:
                    await _read_stream(response, attempt, load)
                    return
        except httpx.ConnectError:
            retry = "connection refused"  # nothing was sent: the service is down
        except httpx.TransportError as exc:
            # Sent, then the connection broke before an answer: the message may be stored; move on.
            attempt.outcome = f"broken before status ({type(exc).__name__})"
            return
        attempt.retries[retry] += 1
        await asyncio.sleep(_backoff(tries, rng))
    attempt.outcome = "gave up"


def _code(body: str) -> str:
    with contextlib.suppress(ValueError):
        return str(json_object(body).get("code") or json_object(body).get("type") or "")
    return ""


async def _read_stream(response: httpx.Response, attempt: Attempt, load: Load) -> None:
    parts: list[str] = []
    counted = False
    try:
        async for name, data in aiter_sse(response):
            if name == "turn":
                event = json_object(data)
                attempt.turn_id, attempt.user_message_id = event["turn_id"], event["user_message_id"]
                load.open_streams += 1
                counted = True
            elif name == "delta":
                parts.append(json_object(data)["text"])
            elif name == "done":
                attempt.outcome = f"done {json_object(data)['status']}"
        if not attempt.outcome:
            attempt.outcome = "stream ended without done"
    except httpx.TransportError as exc:
        attempt.outcome = f"broken stream ({type(exc).__name__})"
    finally:
        attempt.text = "".join(parts)
        if counted:
            load.open_streams -= 1


async def client(stack: Stack, user: BenchUser, index: int, turns: int, load: Load, rng: random.Random) -> None:
    """``turns`` messages (up to 3x as many while the planned faults have not all happened)."""
    limits = httpx.Limits(max_keepalive_connections=0)  # a fresh connection per message: refusals are clear
    async with httpx.AsyncClient(limits=limits, timeout=STREAM_TIMEOUT) as http:
        for turn in range(3 * turns):
            if turn >= turns and load.chaos_done:
                break
            slow = rng.random() < 0.75
            prefix, expected = ("[[slow]]", SLOW_REPLY) if slow else (f"[[long {LONG_WORDS}]]", LONG_REPLY)
            attempt = Attempt(index, f"{prefix} {MARK} u{index} t{turn} {uuid.uuid4().hex[:6]}", expected)
            load.attempts.append(attempt)
            await send_message(http, stack, user, attempt, load, rng)
            # Think time; after a broken stream the client waits a little longer before its next message.
            broken = not attempt.outcome.startswith("done")
            await asyncio.sleep(rng.uniform(1.0, 3.0) if broken else rng.uniform(0.1, 0.8))


# -- watching turns to their stored outcome ----------------------------------------------------------------
@dataclass
class Watched:
    message_id: uuid.UUID
    turn_id: uuid.UUID
    event: int
    since: float  # monotonic time of the fault
    stored_at: float | None = None
    outcome: str | None = None


_OUTCOMES = """
    select u.id, u.status,
        (select r.status from public.messages r where r.turn_id = u.turn_id and r.role = 'assistant' limit 1) as reply
    from public.messages u where u.id = any($1::uuid[])
"""

_PENDING = """
    select id, turn_id from public.messages
    where role = 'user' and status = 'pending' and user_id = any($1::uuid[])
"""


class OutcomeWatch:
    """Polls the watched user messages every 100 ms (one query) and stamps when each stops being pending."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool
        self.watched: dict[uuid.UUID, Watched] = {}
        self.poll_errors = 0

    async def pending_now(self, users: list[uuid.UUID]) -> list[asyncpg.Record]:
        async with asyncio.timeout(5):
            return await self.pool.fetch(_PENDING, users)

    def watch(self, rows: list[asyncpg.Record], event: int, since: float) -> int:
        added = 0
        for row in rows:
            if row["id"] not in self.watched:  # a turn orphaned by an earlier fault stays with that fault
                self.watched[row["id"]] = Watched(row["id"], row["turn_id"], event, since)
                added += 1
        return added

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            waiting = [w.message_id for w in self.watched.values() if w.stored_at is None]
            if waiting:
                try:
                    async with asyncio.timeout(2):
                        rows = await self.pool.fetch(_OUTCOMES, waiting)
                except DB_ERRORS:
                    self.poll_errors += 1  # Postgres is down: the next poll tries again
                else:
                    now = time.monotonic()
                    for row in rows:
                        if row["status"] != "pending":
                            w = self.watched[row["id"]]
                            w.stored_at, w.outcome = now, row["reply"] or row["status"]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=POLL_SECONDS)


# -- the faults ---------------------------------------------------------------------------------------------
@dataclass
class Fault:
    index: int
    kind: str  # kill | postgres
    at: float = math.nan  # monotonic: SIGKILL sent / Postgres stop begun
    ended: float = math.nan  # the service healthy again / Postgres started again
    open_streams: int = 0  # client streams open when it struck
    in_flight: int = 0  # user messages pending at that moment (watched)
    note: str = ""


async def chaos(
    stack: Stack,
    load: Load,
    watch: OutcomeWatch,
    user_ids: list[uuid.UUID],
    kills: int,
    pg_outage: float,
    rng: random.Random,
) -> list[Fault]:
    plan = ["kill"] * kills + (["postgres"] if pg_outage > 0 else [])
    rng.shuffle(plan)
    faults: list[Fault] = []
    try:
        for index, kind in enumerate(plan, 1):
            fault = Fault(index, kind)
            await asyncio.sleep(rng.uniform(3.0, 10.0))
            # Strike while turns are streaming: wait (bounded) for an open stream, then a random moment later; if
            # no stream is open by then (a short reply ended), wait for the next one (at most 20 tries).
            waited = time.monotonic() + 90
            for _ in range(20):
                while load.open_streams == 0 and not load.done and time.monotonic() < waited:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                if load.open_streams > 0 or load.done or time.monotonic() >= waited:
                    break
            if load.done:
                fault.note = "skipped: the load had ended"
                faults.append(fault)
                continue
            fault.open_streams = load.open_streams
            if kind == "kill":
                fault.at = time.monotonic()
                await asyncio.to_thread(stack.kill_service)
                # Nothing runs the service's turns now: every pending message was in flight at the kill.
                fault.in_flight = watch.watch(await watch.pending_now(user_ids), index, fault.at)
                print(
                    f"  [{_clock()}] fault {index}: service SIGKILLed ({fault.open_streams} streams open, "
                    f"{fault.in_flight} turns in flight)",
                    flush=True,
                )
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                await asyncio.to_thread(stack.start_service)
                fault.ended = time.monotonic()
                print(f"  [{_clock()}] service restarted ({fault.ended - fault.at:.1f}s after the kill)", flush=True)
            else:
                rows = await watch.pending_now(user_ids)  # taken just before the stop
                fault.at = time.monotonic()
                await asyncio.to_thread(stack.postgres.stop)
                fault.in_flight = watch.watch(rows, index, fault.at)
                stopped = time.monotonic()
                print(
                    f"  [{_clock()}] fault {index}: Postgres stopped ({fault.open_streams} streams open, "
                    f"{fault.in_flight} turns in flight; stop took {stopped - fault.at:.1f}s)",
                    flush=True,
                )
                await asyncio.sleep(max(0.0, pg_outage - (stopped - fault.at)))
                await asyncio.to_thread(stack.postgres.start)
                fault.ended = time.monotonic()
                print(
                    f"  [{_clock()}] Postgres started ({fault.ended - fault.at:.1f}s after the stop began)", flush=True
                )
            faults.append(fault)
    finally:
        load.chaos_done = True
    return faults


def _clock() -> str:
    return time.strftime("%H:%M:%S")


# -- the checks -----------------------------------------------------------------------------------------------
_OURS = """
    select u.id, u.turn_id, u.user_id, u.status, u.created_at, u.content,
        count(r.id) as replies, min(r.status) as reply_status, min(r.content) as reply
    from public.messages u
    left join public.messages r on r.turn_id = u.turn_id and r.role = 'assistant'
    where u.role = 'user' and u.user_id = any($1::uuid[])
    group by u.id
"""

# Letta's user messages with these otids, their runs, and the assistant text each run stored.
_LETTA = """
    select u.otid, u.run_id, r.status as run_status, r.stop_reason,
        (select string_agg(part->>'text', '' order by a.sequence_id)
         from messages a cross join lateral jsonb_array_elements(a.content::jsonb) part
         where a.run_id = u.run_id and a.role = 'assistant' and part->>'type' = 'text') as text
    from messages u left join runs r on r.id = u.run_id
    where u.role = 'user' and u.otid = any($1::text[])
"""

# Letta user messages of this benchmark whose otid is none of ours (a message Letta has that we lost).
_LETTA_UNKNOWN = """
    select count(*) from messages u
    where u.role = 'user' and u.agent_id = any($1::text[]) and u.content::text like $2
      and not (coalesce(u.otid, '') = any($3::text[]))
"""


# Replies stored after a newer message of the same user had been sent: the history (ordered by created_at) shows
# the older turn's reply after the newer message, where Letta's record has it before.
_OVERTAKEN = """
    select u.turn_id, u.created_at as asked, r.created_at as stored,
        (select min(n.created_at) from public.messages n
         where n.user_id = u.user_id and n.role = 'user' and n.created_at > u.created_at) as next_asked
    from public.messages u join public.messages r on r.turn_id = u.turn_id and r.role = 'assistant'
    where u.role = 'user' and u.user_id = any($1::uuid[])
      and exists (select 1 from public.messages n where n.user_id = u.user_id and n.role = 'user'
                  and n.created_at > u.created_at and n.created_at < r.created_at)
    order by u.created_at
"""

# Runs of one agent that overlapped in Letta (a run started before an earlier one had completed; runs Letta never
# marked completed, e.g. those that failed with its database, are left out).
_OVERLAPS = """
    select a.agent_id, a.id as first, b.id as second,
        extract(epoch from (a.completed_at at time zone 'UTC') - b.created_at) as overlap_s
    from runs a join runs b on b.agent_id = a.agent_id and b.id <> a.id
        and b.created_at > a.created_at
        and b.created_at < a.completed_at at time zone 'UTC'
    where a.agent_id = any($1::text[])
    order by overlap_s desc
"""


@dataclass
class Comparison:
    stored: int = 0
    letta_completed: int = 0
    stored_complete: int = 0
    mismatches: list[str] = field(default_factory=list)
    cross: Counter[tuple[str, str]] = field(default_factory=Counter)  # (Letta run status, our outcome)
    not_scripted: int = 0
    unknown_in_letta: int = 0
    mismatch_turns: list[uuid.UUID] = field(default_factory=list)
    overtaken: list[asyncpg.Record] = field(default_factory=list)
    overlaps: list[asyncpg.Record] = field(default_factory=list)


def _expected(content: str) -> str:
    return SLOW_REPLY if content.startswith("[[slow]]") else LONG_REPLY


async def compare_with_letta(stack: Stack, pool: asyncpg.Pool[Any], user_ids: list[uuid.UUID]) -> Comparison:
    ours = await pool.fetch(_OURS, user_ids)
    agents = [
        r["letta_agent_id"]
        for r in await pool.fetch(
            "select letta_agent_id from public.user_profiles where id = any($1::uuid[])", user_ids
        )
    ]
    letta = await asyncpg.connect(stack.letta_database_url)
    try:
        records = {r["otid"]: r for r in await letta.fetch(_LETTA, [str(r["id"]) for r in ours])}
        unknown = await letta.fetchval(_LETTA_UNKNOWN, agents, f"%{MARK} u%", [str(r["id"]) for r in ours])
        overlaps = await letta.fetch(_OVERLAPS, agents)
    finally:
        await letta.close()
    overtaken = await pool.fetch(_OVERTAKEN, user_ids)
    result = Comparison(stored=len(ours), unknown_in_letta=unknown, overtaken=overtaken, overlaps=overlaps)
    for row in ours:
        record = records.get(str(row["id"]))
        run_status = (record["run_status"] or "no run") if record else "no record"
        letta_text = (record["text"] or "") if record else ""
        letta_done = run_status == "completed"
        ours_outcome = "pending" if row["status"] == "pending" else (row["reply_status"] or row["status"])
        ours_complete = row["status"] == "complete" and row["reply_status"] == "complete"
        result.letta_completed += letta_done
        result.stored_complete += ours_complete
        result.cross[(run_status, ours_outcome)] += 1
        problem = None
        if row["replies"] > 1:
            problem = f"{row['replies']} assistant rows"
        elif letta_done and not ours_complete:
            problem = f"Letta completed the run, we stored {ours_outcome}"
        elif ours_complete and not letta_done:
            problem = f"we stored complete, Letta's run is {run_status}"
        elif ours_complete and row["reply"] != letta_text:
            problem = f"texts differ: ours {row['reply'][:60]!r}, Letta {letta_text[:60]!r}"
        if ours_complete and row["reply"] != _expected(row["content"]):
            result.not_scripted += 1
        if problem:
            result.mismatches.append(f"turn {row['turn_id']} (message {row['id']}, user {row['user_id']}): {problem}")
            result.mismatch_turns.append(row["turn_id"])
    return result


async def wait_costs_final(pool: asyncpg.Pool[Any], user_ids: list[uuid.UUID], limit_s: float) -> tuple[int, float]:
    """Poll until no message of these users has a non-final cost; (still not final, seconds waited)."""
    started = time.monotonic()
    left = 0
    while time.monotonic() - started < limit_s:
        left = await pool.fetchval(
            "select count(*) from public.messages where user_id = any($1::uuid[]) and cost_final = false", user_ids
        )
        if left == 0:
            break
        await asyncio.sleep(0.5)
    return left, time.monotonic() - started


async def money(
    stack: Stack, pool: asyncpg.Pool[Any], user_ids: list[uuid.UUID]
) -> list[tuple[uuid.UUID, Decimal, Decimal, Decimal]]:
    """Per user: (id, sum of messages.cost, sum of usage_metrics.total_cost, LiteLLM's spend)."""
    rows = await pool.fetch(
        """
        select p.id,
            (select coalesce(sum(cost), 0) from public.messages m where m.user_id = p.id) as messages,
            (select coalesce(sum(total_cost), 0) from public.usage_metrics u where u.user_id = p.id) as metrics
        from public.user_profiles p where p.id = any($1::uuid[])
        """,
        user_ids,
    )
    out = []
    headers = {"Authorization": f"Bearer {stack.config.master_key}"}
    async with httpx.AsyncClient(timeout=30) as http:
        for row in rows:
            response = await http.get(
                f"{stack.config.litellm_url}/user/info", params={"user_id": str(row["id"])}, headers=headers
            )
            response.raise_for_status()
            spend = Decimal(str((response.json().get("user_info") or {}).get("spend") or 0))
            out.append((row["id"], Decimal(row["messages"]), Decimal(row["metrics"]), spend))
    return out


def log_lines(stack: Stack, needles: list[str], limit: int = 12) -> Iterator[str]:
    """The service's log lines that mention any of ``needles`` (turn ids), at most ``limit``."""
    if not needles:
        return
    path = stack.state_dir / "logs" / "service.log"
    shown = 0
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            if any(n in line for n in needles):
                yield line[:400]
                shown += 1
                if shown >= limit:
                    return


# -- the run ------------------------------------------------------------------------------------------------
def _s(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:.1f} s"


async def hold_llm(stack: Stack, seconds: float) -> None:
    """Make every LLM call of the run wait ``seconds`` before answering (a LiteLLM-double fault)."""
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{stack.config.litellm_url}/_double/faults",
            json={"route": "/v1/chat/completions", "delay": seconds, "count": 100_000},
            headers={"Authorization": f"Bearer {stack.config.master_key}"},
        )
        response.raise_for_status()


async def run(
    stack: Stack, users_n: int, turns: int, kills: int, pg_outage: float, seed: int, hold: float = 0.0
) -> None:
    rng = random.Random(seed)
    pool = await asyncpg.create_pool(stack.database_url, min_size=0, max_size=4)  # no floor to restore
    try:
        print(f"\nprovisioning {users_n} users ...", flush=True)
        users = await provision_users(stack, pool, users_n, concurrency=4, name="Chaos")
        user_ids = [u.id for u in users]
        await asyncio.sleep(1.0)
        if hold > 0:
            await hold_llm(stack, hold)

        load = Load()
        watch = OutcomeWatch(pool)
        stop_watch = asyncio.Event()
        watcher = asyncio.create_task(watch.run(stop_watch))
        print(
            f"\n{users_n} users x {turns} messages, {kills} kills, "
            + (f"Postgres down {pg_outage:g}s once" if pg_outage > 0 else "no Postgres outage")
            + f" (seed {seed}{f', LLM held {hold:g}s' if hold else ''}) ...",
            flush=True,
        )
        started = time.monotonic()
        clients = [
            asyncio.create_task(client(stack, u, i, turns, load, random.Random(rng.random())))
            for i, u in enumerate(users)
        ]
        chaos_task = asyncio.create_task(chaos(stack, load, watch, user_ids, kills, pg_outage, rng))
        load_task = asyncio.gather(*clients)
        try:
            async with asyncio.timeout(LOAD_LIMIT_SECONDS):
                # A fault that cannot be undone (the service does not come back) ends the run at once.
                either: set[asyncio.Future[Any]] = {load_task, chaos_task}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if chaos_task.done():
                    faults = chaos_task.result()  # raises what the chaos raised
                    await load_task
                else:
                    await load_task
                    load.done = True
                    faults = await chaos_task
        finally:
            load_task.cancel()
            load.done = True
            for task in [*clients, chaos_task]:
                task.cancel()
            await asyncio.gather(load_task, *clients, chaos_task, return_exceptions=True)
        load_end = time.monotonic()
        print(f"load done in {load_end - started:.0f}s: {len(load.attempts)} messages sent", flush=True)

        # Lease + grace after the last fault (and a little after the last message): nothing may be pending.
        struck = [f for f in faults if not math.isnan(f.at)]
        last = max((f.ended for f in struck), default=load_end)
        deadline = max(last + LEASE_SECONDS + GRACE, load_end + GRACE)
        wait = max(0.0, deadline - time.monotonic())
        print(f"waiting {wait:.0f}s (lease {LEASE_SECONDS}s + grace {GRACE:.0f}s after the last fault) ...", flush=True)
        await asyncio.sleep(wait)
        pending = await pool.fetch(
            "select id, turn_id, user_id, created_at, letta_run_id from public.messages "
            "where status = 'pending' and user_id = any($1::uuid[]) order by created_at",
            user_ids,
        )
        stop_watch.set()
        await watcher

        settle = float(stack.service_environment().get("COST_SETTLE_SECONDS", "0"))
        print(f"waiting for every cost to be final (COST_SETTLE_SECONDS={settle:g}) ...", flush=True)
        not_final, waited = await wait_costs_final(pool, user_ids, 120.0)
        await asyncio.sleep(settle + 2.0)  # a charge that arrives after its turn was final is added at once
        comparison = await compare_with_letta(stack, pool, user_ids)
        money_rows = await money(stack, pool, user_ids)
    finally:
        await pool.close()

    report(stack, load, faults, watch, pending, comparison, money_rows, not_final, waited)


def report(
    stack: Stack,
    load: Load,
    faults: list[Fault],
    watch: OutcomeWatch,
    pending: list[asyncpg.Record],
    comparison: Comparison,
    money_rows: list[tuple[uuid.UUID, Decimal, Decimal, Decimal]],
    not_final: int,
    waited: float,
) -> None:
    outcomes = Counter(a.outcome.split(" (")[0] for a in load.attempts)
    retries: Counter[str] = Counter()
    for a in load.attempts:
        retries.update(a.retries)
    print("\nclient side: " + ", ".join(f"{k}: {v}" for k, v in outcomes.most_common()))
    print("retries: " + (", ".join(f"{k}: {v}" for k, v in retries.most_common()) or "none"))
    complete_seen = [a for a in load.attempts if a.outcome == "done complete"]
    wrong = sum(a.text != a.expected for a in complete_seen)
    print(f"streamed complete replies != scripted text: {wrong} of {len(complete_seen)}")

    rows = []
    for fault in faults:
        turns = [w for w in watch.watched.values() if w.event == fault.index]
        times = [w.stored_at - w.since for w in turns if w.stored_at is not None]
        kinds = Counter(w.outcome or "still pending" for w in turns)
        rows.append(
            [
                f"{fault.index}: {'SIGKILL' if fault.kind == 'kill' else 'Postgres stop'}"
                + (f" ({fault.note})" if fault.note else ""),
                _s(fault.ended - fault.at),
                str(fault.open_streams),
                str(len(turns)),
                ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "-",
                _s(median(times)),
                _s(max(times) if times else math.nan),
            ]
        )
    print_table(
        "Faults: turns in flight and the time from the fault to their stored outcome (100 ms polls)",
        ["fault", "down for", "streams open", "in flight", "stored as", "median", "max"],
        rows,
    )
    crash = [
        w.stored_at - w.since
        for w in watch.watched.values()
        if w.stored_at is not None and faults[w.event - 1].kind == "kill"
    ]
    crashed = [w for w in watch.watched.values() if faults[w.event - 1].kind == "kill"]
    print(
        f"crash -> stored outcome, all kills: {len(crash)} of {len(crashed)} turns stored, median {_s(median(crash))}, "
        f"max {_s(max(crash) if crash else math.nan)} (lease {LEASE_SECONDS}s, recovery grace {GRACE_SECONDS:g}s, "
        f"pass every ~{INTERVAL_SECONDS:g}s); poll errors while Postgres was down: {watch.poll_errors}"
    )

    print(f"\n1. messages still pending after lease + grace: {len(pending)}  (target 0)")
    for row in pending[:10]:
        print(
            f"   PENDING message {row['id']} turn {row['turn_id']} user {row['user_id']} created {row['created_at']} "
            f"run {row['letta_run_id']}"
        )

    c = comparison
    print(
        f"\n2. Letta vs stored, {c.stored} stored user messages: completed in Letta {c.letta_completed}, "
        f"stored complete {c.stored_complete}, mismatches {len(c.mismatches)}  (target equal, 0)"
    )
    for (letta_status, ours), count in sorted(c.cross.items()):
        print(f"   Letta run {letta_status:<10} / stored {ours:<10} {count}")
    print(
        f"   stored complete replies != scripted text: {c.not_scripted}; Letta user messages of this run with "
        f"no stored message: {c.unknown_in_letta}"
    )
    for line in c.mismatches[:10]:
        print(f"   MISMATCH {line}")
    print(
        f"   replies stored after a newer message of the same user (history out of Letta's order): {len(c.overtaken)}"
    )
    for row in c.overtaken[:10]:
        print(
            f"     turn {row['turn_id']}: asked {row['asked']:%H:%M:%S.%f}, "
            f"next message {row['next_asked']:%H:%M:%S.%f}, reply stored {row['stored']:%H:%M:%S.%f}"
        )
    worst = max((float(r["overlap_s"]) for r in c.overlaps), default=0.0)
    print(f"   Letta runs of one agent that overlapped: {len(c.overlaps)} (longest overlap {worst:.2f} s)")
    for row in c.overlaps[:5]:
        print(
            f"     {row['agent_id']}: {row['first']} still running {float(row['overlap_s']):.2f} s into {row['second']}"
        )

    diffs_messages = [abs(m - s) for _, m, _, s in money_rows]
    diffs_metrics = [abs(u - s) for _, _, u, s in money_rows]
    tolerance = Decimal("1e-7")
    print(
        f"\n3. recorded vs charged, {len(money_rows)} users (all costs final: {not_final == 0}, "
        f"{not_final} not final after {waited:.0f}s):"
    )
    print(
        f"   messages.cost vs LiteLLM spend: max |diff| {max(diffs_messages, default=0):.8f}, "
        f"users differing {sum(d > tolerance for d in diffs_messages)}"
    )
    print(
        f"   usage_metrics.total_cost vs LiteLLM spend: max |diff| {max(diffs_metrics, default=0):.8f}, "
        f"users differing {sum(d > tolerance for d in diffs_metrics)}"
    )
    total_spend = sum((s for *_, s in money_rows), Decimal(0))
    print(f"   LiteLLM charged {total_spend:.8f} in all")
    for user_id, m, u, s in money_rows:
        if abs(m - s) > tolerance or abs(u - s) > tolerance:
            print(f"   MONEY user {user_id}: messages {m:.8f}, usage_metrics {u:.8f}, LiteLLM {s:.8f}")

    needles = [str(r["turn_id"]) for r in pending] + [str(t) for t in c.mismatch_turns]
    if needles:
        print("\nservice log lines of the turns above:")
        for line in log_lines(stack, needles[:10]):
            print(f"   {line}")
    problems = service_log_problems(stack)
    print(f"\nservice log: {sum(problems.values())} warning/error lines" + (":" if problems else ""))
    for line, count in problems.most_common(12):
        print(f"  {count}x {line}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=6, help="users chatting at the same time")
    parser.add_argument("--turns", type=int, default=20, help="messages per user (more while faults are pending)")
    parser.add_argument("--kills", type=int, default=4, help="SIGKILL + restart of the service")
    parser.add_argument("--pg-outage", type=float, default=4.0, help="seconds Postgres is stopped, once (0: never)")
    parser.add_argument(
        "--hold", type=float, default=0.0, help="seconds every LLM call waits before answering (double's fault)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (printed; default: random)")
    parser.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--letta-env", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    banner("chaos benchmark")
    with running_stack(parse_env(args.service_env), parse_env(args.letta_env)) as stack:
        asyncio.run(run(stack, args.users, args.turns, args.kills, args.pg_outage, seed, args.hold))


if __name__ == "__main__":
    entry_point(main)
