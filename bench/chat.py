"""Chat benchmark, in one run against one Letta and the scripted model of the LiteLLM double.

(a) Added latency: ``--turns`` turns through the service's SSE endpoint (``POST /api/v1/chat/message``)
    interleaved with the same kind of turn sent straight to Letta's streaming endpoint through letta-client,
    as the service calls it (``stream_tokens``, pings), each path with its own user and agent, never two
    turns on one agent at once. Time to first delta (service: first ``delta`` event; Letta: first
    ``assistant_message``) and total turn time (service: the ``done`` event, i.e. after the turn is stored;
    Letta: the end of the stream). The service's added latency is the difference: end to end, and "around
    Letta", i.e. less Letta's own part of each turn as a TCP tap in front of Letta saw it (bench/tap.py),
    which takes Letta's turn-to-turn spread out of the comparison. A third user's turns run in a thread (a Letta
    conversation, recompiled only after a memory change: none in this bench): what a thread costs over the default
    thread.
(b) Service CPU per turn: the service process's utime+stime (/proc/<pid>/stat) around each service turn.
(c) Concurrent open streams: ``--streams`` users are signed up and provisioned (bounded concurrency),
    then one ``[[slow]]`` turn per user is opened at the same moment. The service's VmRSS is sampled
    before and while they are open: RSS per open stream = (VmRSS at the most open streams a sample saw - VmRSS
    before) / that peak. RSS is a high-water mark: it counts everything the streams held at once, which includes
    the requests still waiting for Letta (it accepts them one at a time: most of the figure is reached before
    the first stream opens, printed apart) and what a user's first request leaves cached (the verified token,
    the budget): every stream here is a new user's first. It varies by a few KiB from run to run. Every turn is
    checked: one user row; when text was streamed, exactly one assistant row equal to the concatenated deltas;
    whether Letta's own history holds the turn; and whether the cost the service recorded equals what LiteLLM
    charged.

(d) Resume: ``--resumes`` ``[[slow]]`` turns, each read up to a random delta, hung up, and resumed with
    ``Last-Event-ID`` (``GET /api/v1/chat/turns/{id}/stream``), alternately on the replica running the turn and
    on a second service process: reconnect -> first replayed event, and the joined deltas of the resumed turn
    against the stored reply.

    .venv/bin/python -m bench.chat [--turns 40] [--streams 50] [--rounds 1] [--hold 0] [--resumes 40]
        [--seed N] [--service-env KEY=VALUE ...] [--letta-env KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import re
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import asyncpg
import httpx

from bench.common import (
    BENCH_PORTS,
    CLOCK_TICKS,
    LATENCY_HEADERS,
    BenchUser,
    banner,
    cpu_seconds,
    entry_point,
    latency_row,
    median,
    ms,
    open_fds,
    p95,
    parse_env,
    print_table,
    provision_users,
    rss_kib,
    running_stack,
    service_pid,
)
from bench.tap import LettaTap, StreamMark
from devstack.doubles.scripted_model import SLOW_WORDS
from devstack.sse import aiter_numbered_events, aiter_sse, json_object
from devstack.stack import Stack
from service.clients.http import http_client
from service.clients.letta import LettaClient

LONG_WORDS = 30
# The most concurrent streams the stock local stack serves without failures on 2 cores: at 100, Letta's
# unpooled database connections exhaust Postgres (see bench/README.md).
DEFAULT_STREAMS = 50
SLOW_REPLY = " ".join(f"slow{i}" for i in range(1, SLOW_WORDS + 1))
STREAM_TIMEOUT = httpx.Timeout(600.0, connect=30.0, pool=None)
# Letta keeps working on a turn for ~100 ms after its [DONE] (it stores the run): each measured turn starts
# after this pause, so neither path pays for the other's previous turn.
SETTLE_SECONDS = 0.3


@dataclass
class TurnTiming:
    started: float = math.nan  # perf_counter when the request was sent
    first_delta: float = math.nan
    total: float = math.nan
    text: str = ""
    cpu: float = 0.0
    letta: StreamMark | None = None  # the same turn as the tap in front of Letta saw it

    def letta_part(self, attr: str) -> float:
        """Letta's own part of ``first_delta``/``total``, as the tap saw it."""
        assert self.letta is not None
        own = self.letta.letta_first if attr == "first_delta" else self.letta.letta_total
        return math.nan if own is None else own

    def around_letta(self, attr: str) -> float:
        """Time this path added to ``first_delta``/``total`` beyond Letta's own part of it."""
        return float(getattr(self, attr)) - self.letta_part(attr)

    @property
    def to_letta(self) -> float:
        """From sending the request to the whole turn request having reached Letta (the first half of
        ``around_letta("first_delta")``; the rest is the way back of the first token)."""
        assert self.letta is not None
        return self.letta.requested - self.started


def _ok(timing: TurnTiming, expected: str, path: str) -> TurnTiming:
    if timing.text != expected:
        raise RuntimeError(f"{path} turn replied {timing.text!r}, expected {expected!r}")
    return timing


async def service_turn(
    http: httpx.AsyncClient, stack: Stack, user: BenchUser, content: str, thread_id: str | None = None
) -> TurnTiming:
    """One turn through the service's SSE endpoint (in ``thread_id``, else the default thread)."""
    timing = TurnTiming()
    parts: list[str] = []
    status = None
    started = timing.started = time.perf_counter()
    async with http.stream(
        "POST",
        f"{stack.config.service_url}/api/v1/chat/message",
        headers={**user.headers, "Accept": "text/event-stream"},
        json={"content": content, **({"thread_id": thread_id} if thread_id else {})},
        timeout=STREAM_TIMEOUT,
    ) as response:
        if response.status_code != 200:
            raise RuntimeError(f"service answered {response.status_code}: {(await response.aread())[:500]!r}")
        async for name, data in aiter_sse(response):
            if name == "delta":
                if not parts:
                    timing.first_delta = time.perf_counter() - started
                parts.append(json_object(data)["text"])
            elif name == "error":
                raise RuntimeError(f"service turn failed: {data}")
            elif name == "done":
                status = json_object(data)["status"]
                timing.total = time.perf_counter() - started
    if status != "complete":
        raise RuntimeError(f"service turn ended {status}")
    timing.text = "".join(parts)
    return timing


async def letta_turn(http: httpx.AsyncClient, letta: LettaClient, agent_id: str, content: str) -> TurnTiming:
    """The same turn consumed straight from Letta, with the request the service sends
    (``LettaClient.turn_request``) and the same client code as ``service_turn`` (httpx, SSE lines parsed alike),
    so the two paths differ only by the service."""
    timing = TurnTiming()
    parts: list[str] = []
    stop_reason = None
    started = timing.started = time.perf_counter()
    # The direct path sends an otid too, as the service does (Letta keeps it on the message).
    response = await http.send(letta.turn_request(agent_id, content, str(uuid.uuid4())), stream=True)
    try:
        if response.status_code != 200:
            raise RuntimeError(f"Letta answered {response.status_code}: {(await response.aread())[:500]!r}")
        async for name, data in aiter_sse(response):
            if not math.isnan(timing.total):
                continue  # after [DONE]: read to the end, so the connection is reused as the service's is
            if data == "[DONE]":
                timing.total = time.perf_counter() - started
                continue
            if name == "error":
                raise RuntimeError(f"Letta turn failed: {data}")
            event = json_object(data)
            kind = event.get("message_type")
            if kind == "assistant_message" and event.get("content"):
                if not parts:
                    timing.first_delta = time.perf_counter() - started
                parts.append(event["content"])
            elif kind == "stop_reason":
                stop_reason = event.get("stop_reason")
    finally:
        await response.aclose()
    if stop_reason != "end_turn":
        raise RuntimeError(f"Letta turn stopped: {stop_reason}")
    timing.text = "".join(parts)
    return timing


# -- (a) + (b) ----------------------------------------------------------------------------------------------
async def added_latency(stack: Stack, tap: LettaTap, pool: asyncpg.Pool[Any], turns: int) -> None:
    pid = service_pid(stack)
    via_service, direct, in_thread = await provision_users(stack, pool, 3, concurrency=2, name="Latency")
    agent_id = await pool.fetchval("select letta_agent_id from public.user_profiles where id = $1", direct.id)
    expected = " ".join(f"word{i}" for i in range(1, LONG_WORDS + 1))
    service: list[TurnTiming] = []
    letta: list[TurnTiming] = []
    threaded: list[TurnTiming] = []  # the same turns in a thread: a Letta conversation (memory unchanged: no recompile)

    async def measured(turn: Awaitable[TurnTiming], path: str) -> TurnTiming:
        timing = _ok(await turn, expected, path)
        timing.letta = tap.mark_after(timing.started)
        return timing

    async with http_client(limits=httpx.Limits(), timeout=STREAM_TIMEOUT) as http:
        letta_direct = LettaClient(http, tap.url, stack.config.letta_password)
        created = await http.post(f"{stack.config.service_url}/api/v1/threads", headers=in_thread.headers, json={})
        thread_id = created.json()["id"]
        for index in range(2):  # warm-up, not measured: first turns of an agent and new connections
            _ok(await service_turn(http, stack, via_service, f"[[long {LONG_WORDS}]] warm-up {index}"), expected, "s")
            _ok(await letta_turn(http, letta_direct, agent_id, f"[[long {LONG_WORDS}]] warm-up {index}"), expected, "d")
            warm = f"[[long {LONG_WORDS}]] warm-up {index}"
            _ok(await service_turn(http, stack, in_thread, warm, thread_id), expected, "t")
        print(f"\n{turns} service turns interleaved with {turns} direct Letta turns ...", flush=True)
        for index in range(turns):
            content = f"[[long {LONG_WORDS}]] turn {index}"
            await asyncio.sleep(SETTLE_SECONDS)
            before = cpu_seconds(pid)
            timing = await measured(service_turn(http, stack, via_service, content), "service")
            timing.cpu = cpu_seconds(pid) - before
            service.append(timing)
            await asyncio.sleep(SETTLE_SECONDS)
            letta.append(await measured(letta_turn(http, letta_direct, agent_id, content), "direct Letta"))
            await asyncio.sleep(SETTLE_SECONDS)
            threaded.append(await measured(service_turn(http, stack, in_thread, content, thread_id), "thread"))

    def col(timings: list[TurnTiming], attr: str) -> list[float]:
        return [getattr(t, attr) for t in timings]

    def around(timings: list[TurnTiming], attr: str) -> list[float]:
        return [t.around_letta(attr) for t in timings]

    def added(s: list[float], d: list[float]) -> list[str]:
        """[median diff, p95 diff, median of paired diffs] of service minus direct."""
        return [ms(median(s) - median(d)), ms(p95(s) - p95(d)), ms(median([a - b for a, b in zip(s, d, strict=True)]))]

    print_table(
        f"(a) Time to first delta and total turn time, {LONG_WORDS}-word replies ([[long {LONG_WORDS}]])",
        LATENCY_HEADERS,
        [
            latency_row("service SSE: first delta", col(service, "first_delta")),
            latency_row("Letta direct: first delta", col(letta, "first_delta")),
            latency_row("service SSE: total (until `done`, stored)", col(service, "total")),
            latency_row("Letta direct: total (end of stream)", col(letta, "total")),
        ],
    )
    print_table(
        "(a) The same, less Letta's own part of each turn (request -> first assistant token / end of stream at the "
        "tap)",
        LATENCY_HEADERS,
        [
            latency_row("Letta's own part: first token, service turns", [t.letta_part("first_delta") for t in service]),
            latency_row("Letta's own part: first token, direct turns", [t.letta_part("first_delta") for t in letta]),
            latency_row("service SSE: first delta, around Letta", around(service, "first_delta")),
            latency_row("Letta direct: first delta, around Letta", around(letta, "first_delta")),
            latency_row("  of which service SSE: request -> Letta", col(service, "to_letta")),
            latency_row("  of which Letta direct: request -> Letta", col(letta, "to_letta")),
            latency_row("service SSE: total, around Letta", around(service, "total")),
            latency_row("Letta direct: total, around Letta", around(letta, "total")),
        ],
    )
    print_table(
        "(a) Latency the service adds (service - direct)",
        ["", "Δ median", "Δ p95", "median of paired Δ"],
        [
            ["first delta, end to end", *added(col(service, "first_delta"), col(letta, "first_delta"))],
            ["first delta, around Letta", *added(around(service, "first_delta"), around(letta, "first_delta"))],
            ["  of which on the way to Letta", *added(col(service, "to_letta"), col(letta, "to_letta"))],
            ["total turn, end to end", *added(col(service, "total"), col(letta, "total"))],
            ["total turn, around Letta", *added(around(service, "total"), around(letta, "total"))],
        ],
    )
    print_table(
        "(a) In a thread (a Letta conversation; the memory does not change, so no recompile) versus the default "
        "thread (the agent's own history)",
        ["", "Δ median", "Δ p95", "median of paired Δ"],
        [
            ["first delta, thread - default thread", *added(col(threaded, "first_delta"), col(service, "first_delta"))],
            ["first delta, thread - Letta direct", *added(col(threaded, "first_delta"), col(letta, "first_delta"))],
            [
                "  Letta's own part (turn request -> first token), thread - default",
                *added([t.letta_part("first_delta") for t in threaded], [t.letta_part("first_delta") for t in service]),
            ],
            [
                "  around Letta (the service), thread - default",
                *added(around(threaded, "first_delta"), around(service, "first_delta")),
            ],
            ["total turn, thread - default thread", *added(col(threaded, "total"), col(service, "total"))],
        ],
    )
    cpu = col(service, "cpu")
    print_table(
        f"(b) Service CPU per turn (utime+stime, {turns} turns, {1000 / CLOCK_TICKS:.0f} ms clock ticks)",
        ["", "total", "per turn"],
        [["service process", f"{sum(cpu):.2f} s", ms(sum(cpu) / len(cpu))]],
    )


# -- (c) ----------------------------------------------------------------------------------------------------
@dataclass
class StreamOutcome:
    user: BenchUser
    status: int | None = None
    turn_id: str | None = None
    text: str = ""
    done: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    exception: str | None = None
    opened_at: float = math.nan
    first_delta_at: float = math.nan
    closed_at: float = math.nan
    body: str = ""


@dataclass
class OpenCounter:
    open: int = 0
    peak: int = 0
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, open, rss KiB)


async def one_stream(
    http: httpx.AsyncClient,
    stack: Stack,
    user: BenchUser,
    round_no: int,
    start: asyncio.Event,
    counter: OpenCounter,
    t0: float,
) -> StreamOutcome:
    outcome = StreamOutcome(user)
    await start.wait()
    is_open = False
    try:
        async with http.stream(
            "POST",
            f"{stack.config.service_url}/api/v1/chat/message",
            headers={**user.headers, "Accept": "text/event-stream"},
            json={"content": f"[[slow]] concurrent stream r{round_no} {user.id}"},
            timeout=STREAM_TIMEOUT,
        ) as response:
            outcome.status = response.status_code
            if response.status_code != 200:
                body = await response.aread()
                outcome.body = body.decode(errors="replace")[:300]
                with contextlib.suppress(ValueError):
                    outcome.turn_id = json_object(body.decode()).get("turn_id")
                return outcome
            outcome.opened_at = time.perf_counter() - t0
            counter.open += 1
            counter.peak = max(counter.peak, counter.open)
            is_open = True
            parts: list[str] = []
            async for name, data in aiter_sse(response):
                if name == "turn":
                    outcome.turn_id = json_object(data)["turn_id"]
                elif name == "delta":
                    if not parts:
                        outcome.first_delta_at = time.perf_counter() - t0
                    parts.append(json_object(data)["text"])
                elif name == "error":
                    outcome.errors.append(json_object(data))
                elif name == "done":
                    outcome.done = json_object(data)
            outcome.text = "".join(parts)
    except httpx.HTTPError as exc:
        outcome.exception = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        if is_open:
            counter.open -= 1
        outcome.closed_at = time.perf_counter() - t0
    return outcome


async def sample(pid: int, counter: OpenCounter, t0: float, stop: asyncio.Event, interval: float = 0.05) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            counter.samples.append((time.perf_counter() - t0, counter.open, rss_kib(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def verify(pool: asyncpg.Pool[Any], outcomes: list[StreamOutcome], since: datetime) -> dict[str, int]:
    """Zero lost or duplicated messages. A streamed turn: deltas == stored reply == the scripted reply, one
    user + one assistant row. A refused turn (503 with a turn_id): one user row marked failed, no reply.
    No other rows for these users."""
    problems: Counter[str] = Counter()
    rows = await pool.fetch(
        "select user_id, turn_id, role, content, status from public.messages "
        "where user_id = any($1::uuid[]) and created_at >= $2",
        [o.user.id for o in outcomes],
        since,
    )
    by_turn: dict[uuid.UUID, list[asyncpg.Record]] = {}
    by_user: Counter[uuid.UUID] = Counter()
    for row in rows:
        by_turn.setdefault(row["turn_id"], []).append(row)
        by_user[row["user_id"]] += 1
    for outcome in outcomes:
        if outcome.turn_id is None:
            problems["turn without a turn_id (no `turn` event, no id in the error)"] += 1
            continue
        turn_rows = by_turn.get(uuid.UUID(outcome.turn_id), [])
        roles = Counter(r["role"] for r in turn_rows)
        if by_user[outcome.user.id] != len(turn_rows):
            problems["rows for the user outside the turn"] += 1
        if outcome.status != 200:
            statuses = [r["status"] for r in turn_rows]
            if roles != Counter({"user": 1}) or statuses != ["failed"]:
                problems[f"refused turn stored as {sorted(roles.items())} {statuses}"] += 1
            continue
        complete = outcome.done is not None and outcome.done["status"] == "complete"
        # A reply is stored when the turn completed or streamed some text before failing; a turn that failed
        # before any text has only its user message (marked failed).
        replies = 1 if complete or outcome.text else 0
        if roles["user"] != 1:
            problems[f"turn with {roles['user']} user rows"] += 1
        if roles["assistant"] != replies:
            problems[f"turn with {roles['assistant']} assistant rows (expected {replies})"] += 1
        stored = next((r["content"] for r in turn_rows if r["role"] == "assistant"), None)
        if stored is not None and stored != outcome.text:
            problems["streamed deltas != stored assistant message"] += 1
        if complete and outcome.text != SLOW_REPLY:
            problems["complete turn whose streamed text != the scripted reply"] += 1
    return dict(problems)


_LETTA_TURNS = """
select m.agent_id,
       count(*) filter (where m.role = 'user' and m.content::text like '%' || $2 || '%') as asked,
       count(*) filter (where m.role = 'assistant' and m.content::text like '%slow20%') as answered
from messages m where m.agent_id = any($1::text[]) group by m.agent_id
"""


async def letta_side(
    stack: Stack, pool: asyncpg.Pool[Any], outcomes: list[StreamOutcome], round_no: int
) -> tuple[int, int]:
    """In how many of these turns' agents Letta's own history holds the round's user message, and a
    complete reply for every round so far (read from Letta's database). Waits until the counts stop
    changing: Letta keeps working after a client gave up."""
    if not outcomes:
        return 0, 0
    agents = [
        str(r["letta_agent_id"])
        for r in await pool.fetch(
            "select letta_agent_id from public.user_profiles where id = any($1::uuid[])", [o.user.id for o in outcomes]
        )
    ]
    letta = await asyncpg.connect(stack.letta_database_url)
    try:
        previous: tuple[int, int] | None = None
        stable = 0
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            rows = await letta.fetch(_LETTA_TURNS, agents, f"concurrent stream r{round_no} ")
            counts = (sum(r["asked"] > 0 for r in rows), sum(r["answered"] >= round_no for r in rows))
            stable = stable + 1 if counts == previous else 0
            if stable >= 3:
                break
            previous = counts
            await asyncio.sleep(2.0)
        return previous or (0, 0)
    finally:
        await letta.close()


async def billing_check(stack: Stack, pool: asyncpg.Pool[Any], outcomes: list[StreamOutcome]) -> tuple[int, list[str]]:
    """Per user: the cost the service recorded (usage_metrics) vs the spend LiteLLM charged to the user's key.
    Returns (users that agree, examples of those that do not)."""
    recorded = {
        r["user_id"]: float(r["cost"])
        for r in await pool.fetch(
            "select user_id, sum(total_cost) as cost from public.usage_metrics where user_id = any($1::uuid[]) "
            "group by user_id",
            [o.user.id for o in outcomes],
        )
    }
    agree, mismatches = 0, []
    headers = {"Authorization": f"Bearer {stack.config.master_key}"}
    async with httpx.AsyncClient(timeout=30) as http:
        for outcome in outcomes:
            response = await http.get(
                f"{stack.config.litellm_url}/user/info", params={"user_id": str(outcome.user.id)}, headers=headers
            )
            response.raise_for_status()
            spend = float((response.json().get("user_info") or {}).get("spend") or 0.0)
            ours = recorded.get(outcome.user.id, 0.0)
            if abs(spend - ours) <= 1e-7:
                agree += 1
            else:
                mismatches.append(f"user {outcome.user.id}: service recorded {ours:.8f}, LiteLLM charged {spend:.8f}")
    return agree, mismatches


async def failure_details(pool: asyncpg.Pool[Any], outcomes: list[StreamOutcome]) -> Counter[str]:
    """What the service stored for turns that did not complete: (role, status, tokens, error) kinds."""
    turn_ids = [
        uuid.UUID(o.turn_id) for o in outcomes if o.turn_id and (o.done is None or o.done["status"] != "complete")
    ]
    # The user-facing code is on the message; the upstream text (operators only) in private.message_errors.
    rows = await pool.fetch(
        "select m.role, m.status, m.tokens_used, length(m.content) as chars, m.error_code, e.detail "
        "from public.messages m left join private.message_errors e on e.message_id = m.id "
        "where m.turn_id = any($1::uuid[]) order by m.role",
        turn_ids,
    )
    return Counter(
        f"{r['role']} {r['status']}, {r['chars']} chars, tokens {r['tokens_used']}, code {r['error_code']}, "
        f"detail {re.sub(r'run-[0-9a-f-]+', 'run-…', str(r['detail']))[:400]!r}"
        for r in rows
    )


def _outcome_kind(outcome: StreamOutcome) -> str:
    if outcome.exception:
        return f"client error {outcome.exception.split(':')[0]}"
    if outcome.status != 200:
        return f"HTTP {outcome.status}"
    if outcome.done is None:
        return "stream ended without `done`"
    if outcome.errors:
        return f"done {outcome.done['status']} ({outcome.errors[0].get('code')})"
    return f"done {outcome.done['status']}"


async def concurrent_streams(stack: Stack, pool: asyncpg.Pool[Any], streams: int, hold: float, rounds: int) -> bool:
    """Provision ``streams`` users, then ``rounds`` rounds of one concurrent stream each. True when all is well."""
    print(f"\nprovisioning {streams} users for concurrent streams (8 at a time) ...", flush=True)
    started = time.monotonic()
    users = await provision_users(stack, pool, streams, concurrency=8, name="Stream")
    print(f"  {streams} users active in {time.monotonic() - started:.0f}s", flush=True)
    await asyncio.sleep(2.0)  # let provisioning's background work settle
    ok = True
    for round_no in range(1, rounds + 1):
        ok = await stream_round(stack, pool, users, hold, round_no, rounds) and ok
    return ok


async def stream_round(
    stack: Stack, pool: asyncpg.Pool[Any], users: list[BenchUser], hold: float, round_no: int, rounds: int
) -> bool:
    """One concurrent [[slow]] turn per user, measured and verified."""
    pid = service_pid(stack)
    streams = len(users)
    since = await pool.fetchval("select now()")
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=STREAM_TIMEOUT) as http:
        if hold > 0:
            fault = {"route": "/v1/chat/completions", "delay": hold, "count": streams}
            response = await http.post(
                f"{stack.config.litellm_url}/_double/faults",
                json=fault,
                headers={"Authorization": f"Bearer {stack.config.master_key}"},
            )
            response.raise_for_status()
        rss_before, fds_before, cpu_before = rss_kib(pid), open_fds(pid), cpu_seconds(pid)
        counter = OpenCounter()
        start, stop = asyncio.Event(), asyncio.Event()
        t0 = time.perf_counter()
        sampler = asyncio.create_task(sample(pid, counter, t0, stop))
        tasks = [asyncio.create_task(one_stream(http, stack, u, round_no, start, counter, t0)) for u in users]
        label = f" (round {round_no} of {rounds})" if rounds > 1 else ""
        print(f"opening {streams} [[slow]] streams at once{label} ...", flush=True)
        start.set()
        fds_peak = fds_before
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0.25)
            with contextlib.suppress(OSError):
                fds_peak = max(fds_peak, open_fds(pid))
        outcomes = [t.result() for t in tasks]
        wall = time.perf_counter() - t0
        cpu_used = cpu_seconds(pid) - cpu_before
        stop.set()
        await sampler
    await asyncio.sleep(3.0)
    rss_after = rss_kib(pid)
    problems = await verify(pool, outcomes, since)
    refused = [o for o in outcomes if o.status != 200]
    completed = [o for o in outcomes if o.done is not None and o.done["status"] == "complete"]
    failed = [o for o in outcomes if o.status == 200 and o not in completed]
    in_letta = {
        "complete": (completed, await letta_side(stack, pool, completed, round_no)),
        "refused (non-200)": (refused, await letta_side(stack, pool, refused, round_no)),
        "failed": (failed, await letta_side(stack, pool, failed, round_no)),
    }
    billed_ok, billing_mismatches = await billing_check(stack, pool, outcomes)
    failures = await failure_details(pool, outcomes)

    kinds = Counter(_outcome_kind(o) for o in outcomes)
    # The most streams a sample saw open: a peak shorter than the sampling interval has no RSS figure of its own.
    sampled_peak = max((s[1] for s in counter.samples), default=0)
    peak_samples = [s for s in counter.samples if s[1] == sampled_peak]
    rss_peak_open = max((s[2] for s in peak_samples), default=rss_before)
    rss_max = max((s[2] for s in counter.samples), default=rss_before)
    first_open = next((i for i, s in enumerate(counter.samples) if s[1] > 0), len(counter.samples))
    rss_in_flight = max((s[2] for s in counter.samples[:first_open]), default=rss_before)
    all_open_for = sum(
        later[0] - earlier[0]
        for earlier, later in zip(counter.samples, counter.samples[1:], strict=False)
        if earlier[1] == streams
    )
    opened = [o.opened_at for o in outcomes if not math.isnan(o.opened_at)]
    first = [o.first_delta_at for o in outcomes if not math.isnan(o.first_delta_at)]
    closed = [o.closed_at for o in outcomes if o.done is not None]
    refusals = [o.closed_at for o in outcomes if o.status is not None and o.status != 200]
    print_table(
        f"(c) {streams} concurrent [[slow]] SSE streams (20 words, 100 ms apart)"
        + (f", LLM held {hold:.0f}s" if hold else "")
        + label,
        LATENCY_HEADERS,
        [
            latency_row("request -> stream open (200 + headers)", opened),
            latency_row("request -> first delta", first),
            latency_row("request -> `done`", closed),
            *([latency_row("request -> refused (non-200)", refusals)] if refusals else []),
        ],
    )
    per_stream = (rss_peak_open - rss_before) / sampled_peak if sampled_peak else math.nan
    in_flight_part = (rss_in_flight - rss_before) / sampled_peak if sampled_peak else math.nan
    print_table(
        f"(c) Service memory and CPU{label}",
        ["", "value"],
        [
            ["streams open at once (peak; the most a sample saw)", f"{counter.peak} of {streams} ({sampled_peak})"],
            ["time with all streams open", f"{all_open_for:.1f} s"],
            ["VmRSS before", f"{rss_before / 1024:.1f} MiB"],
            ["VmRSS before the first stream opened (all requests in)", f"{rss_in_flight / 1024:.1f} MiB"],
            ["VmRSS at peak open streams", f"{rss_peak_open / 1024:.1f} MiB"],
            ["VmRSS max during the run", f"{rss_max / 1024:.1f} MiB"],
            ["VmRSS 3 s after the last stream", f"{rss_after / 1024:.1f} MiB"],
            ["RSS per open stream", f"{per_stream:.0f} KiB"],
            ["  of which reached before the first stream opened", f"{in_flight_part:.0f} KiB"],
            ["open fds before / peak", f"{fds_before} / {fds_peak}"],
            ["service CPU for the run / per turn", f"{cpu_used:.2f} s / {ms(cpu_used / len(outcomes))}"],
            ["wall time for all streams", f"{wall:.1f} s"],
        ],
    )
    print("outcomes: " + ", ".join(f"{kind}: {count}" for kind, count in kinds.most_common()))
    for outcome in [o for o in outcomes if _outcome_kind(o) != "done complete"][:5]:
        print(f"  e.g. {_outcome_kind(outcome)}: {outcome.body or outcome.errors or outcome.exception}")
    for detail, count in failures.most_common(6):
        print(f"  stored for unfinished turns ({count}x): {detail}")
    for label, (group, (asked, answered)) in in_letta.items():
        if group:
            print(
                f"{label} turns: {len(group)}; in the agents' Letta history: user message {asked}, "
                f"complete reply {answered}"
            )
    if problems:
        print("INTEGRITY PROBLEMS: " + ", ".join(f"{kind}: {count}" for kind, count in problems.items()))
    else:
        print(
            f"integrity: 0 lost, 0 duplicated messages across {streams} turns "
            "(1 user row each; 1 assistant row == the streamed deltas whenever text was streamed)"
        )
    print(f"billing: service-recorded cost == LiteLLM spend for {billed_ok}/{len(outcomes)} users")
    for mismatch in billing_mismatches[:5]:
        print(f"  BILLING MISMATCH {mismatch}")
    return not problems and not billing_mismatches and kinds == Counter({"done complete": streams})


# -- (d) ----------------------------------------------------------------------------------------------------
RESUME_TIMEOUT = 60.0  # one resumed turn, from its POST to its `done` on the resumed stream
REPLICA_B = "service-b"


@dataclass
class ResumedTurn:
    replica: str  # "same" (the replica running the turn) or "other"
    turn_id: str = ""
    cut_after: int = 0  # id of the last event read before hanging up
    cut_delta: int = 0  # how many deltas had been read then
    reconnect_wall: float = math.nan  # time.time() when the resume request was sent (the database's clock)
    to_headers: float = math.nan  # reconnect -> 200 + headers
    to_first: float = math.nan  # reconnect -> first replayed event
    first_at_wall: float = math.nan  # time.time() when the first replayed event arrived
    first_id: int = 0
    journaled_wall: float = math.nan  # when the batch holding event cut_after + 1 was written (database clock)
    ids_contiguous: bool = False
    status: str | None = None
    joined: str = ""
    stored: str | None = None
    problem: str | None = None

    @property
    def equal(self) -> bool:
        return self.problem is None and self.stored is not None and self.joined == self.stored

    @property
    def already_journaled(self) -> bool:
        """Whether the first event to replay was in the journal when the resume request was sent."""
        return self.journaled_wall <= self.reconnect_wall


NumberedEvent = tuple[int, str, dict[str, Any]]


def numbered_events(response: httpx.Response) -> contextlib.aclosing[AsyncGenerator[NumberedEvent, None]]:
    """``aiter_numbered_events`` closed on leaving the block, also after a ``break`` (the hang-up)."""
    return contextlib.aclosing(cast(AsyncGenerator[NumberedEvent, None], aiter_numbered_events(response)))


def free_port() -> int:
    """A TCP port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def open_turn(http: httpx.AsyncClient, url: str, user: BenchUser, content: str) -> httpx.Response:
    """POST the message (SSE); a 409 while the user's previous turn is still finishing is retried (bounded)."""
    for _ in range(40):
        request = http.build_request(
            "POST",
            f"{url}/api/v1/chat/message",
            headers={**user.headers, "Accept": "text/event-stream"},
            json={"content": content},
        )
        response = await http.send(request, stream=True)
        if response.status_code == 200:
            return response
        body = await response.aread()
        await response.aclose()
        if response.status_code != 409:
            raise RuntimeError(f"service answered {response.status_code}: {body[:300]!r}")
        await asyncio.sleep(0.25)
    raise RuntimeError("the user's previous turn did not end (409 for 10 s)")


async def resume_one(
    http: httpx.AsyncClient, pool: asyncpg.Pool[Any], urls: list[str], user: BenchUser, index: int, rng: random.Random
) -> ResumedTurn:
    """One ``[[slow]]`` turn on the first replica: read it up to a random delta, hang up, resume it with
    ``Last-Event-ID`` on ``urls[index % 2]`` until ``done``, and compare the joined deltas with the stored reply."""
    result = ResumedTurn("same" if index % 2 == 0 else "other")
    events: list[NumberedEvent] = []
    cut_delta = rng.randint(1, SLOW_WORDS - 1)  # hang up after this delta: there is always more to come
    response = await open_turn(http, urls[0], user, f"[[slow]] resume {index}")
    try:
        async with numbered_events(response) as reader:
            async for event in reader:
                events.append(event)
                if event[1] == "delta":
                    result.cut_delta += 1
                if result.cut_delta == cut_delta or event[1] == "done":
                    break
    finally:
        await response.aclose()  # the hang-up: the connection is closed mid-stream
    if not events or events[0][1] != "turn":
        result.problem = f"stream did not start with `turn`: {events[:1]}"
        return result
    result.turn_id = events[0][2]["turn_id"]
    result.cut_after = events[-1][0]
    if events[-1][1] == "done":
        result.problem = f"the turn ended after {result.cut_delta} deltas, before the cut point {cut_delta}"
        return result

    url = urls[index % 2]
    headers = {**user.headers, "Accept": "text/event-stream", "Last-Event-ID": str(result.cut_after)}
    result.reconnect_wall = time.time()
    reconnect = time.perf_counter()
    async with http.stream("GET", f"{url}/api/v1/chat/turns/{result.turn_id}/stream", headers=headers) as resumed:
        result.to_headers = time.perf_counter() - reconnect
        if resumed.status_code != 200:
            result.problem = f"resume answered {resumed.status_code}: {(await resumed.aread())[:300]!r}"
            return result
        async with numbered_events(resumed) as reader:
            async for event in reader:
                if math.isnan(result.to_first):
                    result.to_first = time.perf_counter() - reconnect
                    result.first_at_wall = time.time()
                    result.first_id = event[0]
                events.append(event)
                if event[1] == "done":
                    break
    ids = [event_id for event_id, _, _ in events]
    result.ids_contiguous = ids == list(range(1, len(ids) + 1))
    result.status = events[-1][2].get("status") if events[-1][1] == "done" else None
    result.joined = "".join(data["text"] for _, name, data in events if name == "delta")
    if result.status is None:
        result.problem = "the resumed stream ended without `done`"
    # `done` is sent after the turn is stored; the poll is only a guard.
    for _ in range(50):
        row = await pool.fetchrow(
            "select content, status from public.messages where turn_id = $1 and role = 'assistant'",
            uuid.UUID(result.turn_id),
        )
        if row is not None and row["status"] != "pending":
            result.stored = row["content"]
            break
        await asyncio.sleep(0.1)
    result.journaled_wall = (
        await pool.fetchval(
            "select extract(epoch from created_at)::float8 from private.turn_events where turn_id = $1 and seq = $2",
            uuid.UUID(result.turn_id),
            result.cut_after + 1,
        )
        or math.nan
    )
    return result


async def resumes(stack: Stack, pool: asyncpg.Pool[Any], count: int, seed: int) -> bool:
    """(d): ``count`` turns cut and resumed, alternately on the same replica and on a second one."""
    print(f"\nstarting a second service replica and a user for {count} resumed turns (seed {seed}) ...", flush=True)
    port = free_port()
    other = await asyncio.to_thread(stack.start_replica, REPLICA_B, port)
    try:
        (user,) = await provision_users(stack, pool, 1, concurrency=1, name="Resume")
        rng = random.Random(seed)
        results: list[ResumedTurn] = []
        limits = httpx.Limits(max_keepalive_connections=0)  # every request on a new connection, as a reconnect is
        async with httpx.AsyncClient(limits=limits, timeout=STREAM_TIMEOUT) as http:
            for index in range(count):
                await asyncio.sleep(SETTLE_SECONDS)
                try:
                    async with asyncio.timeout(RESUME_TIMEOUT):
                        urls = [stack.config.service_url, other]
                        results.append(await resume_one(http, pool, urls, user, index, rng))
                except (TimeoutError, RuntimeError, httpx.HTTPError) as exc:
                    failed = ResumedTurn("same" if index % 2 == 0 else "other")
                    failed.problem = f"{type(exc).__name__}: {exc}"[:300]
                    results.append(failed)
        report_resumes(results, port)
    finally:
        await asyncio.to_thread(stack.stop_replica, REPLICA_B)
    return all(r.equal and r.ids_contiguous and r.status == "complete" for r in results)


def report_resumes(results: list[ResumedTurn], port: int) -> None:
    resumed = [r for r in results if not math.isnan(r.to_first)]
    journaled = [r for r in resumed if r.already_journaled]
    followed = [r for r in resumed if not math.isnan(r.journaled_wall) and not r.already_journaled]

    def col(group: list[ResumedTurn], attr: str) -> list[float]:
        return [getattr(r, attr) for r in group]

    print_table(
        f"(d) Resume: [[slow]] turns read up to a random delta, hung up, resumed with Last-Event-ID "
        f"(same replica / another replica on port {port})",
        LATENCY_HEADERS,
        [
            latency_row("reconnect -> 200 + headers", col(resumed, "to_headers")),
            latency_row("reconnect -> first replayed event", col(resumed, "to_first")),
            latency_row("  same replica", col([r for r in resumed if r.replica == "same"], "to_first")),
            latency_row("  other replica", col([r for r in resumed if r.replica == "other"], "to_first")),
            latency_row("  event already journaled at reconnect", col(journaled, "to_first")),
            latency_row("  event journaled after reconnect", col(followed, "to_first")),
            latency_row(
                "    of which its journal write -> received", [r.first_at_wall - r.journaled_wall for r in followed]
            ),
        ],
    )
    cuts = Counter(r.cut_delta for r in resumed)
    print(
        f"resumed {len(resumed)} of {len(results)} "
        f"(same replica {sum(r.replica == 'same' for r in resumed)}, "
        f"other {sum(r.replica == 'other' for r in resumed)}); "
        f"equal {sum(r.equal for r in results)} (joined deltas == stored reply); "
        f"ids 1..n without gap or duplicate {sum(r.ids_contiguous for r in results)}; "
        f"first replayed id == last seen + 1 {sum(r.first_id == r.cut_after + 1 for r in resumed)}; "
        f"done complete {sum(r.status == 'complete' for r in results)}; "
        f"stored == scripted reply {sum(r.stored == SLOW_REPLY for r in results)}"
    )
    print(f"hung up after delta k (k: turns): {', '.join(f'{k}: {n}' for k, n in sorted(cuts.items()))}")
    for r in [r for r in results if not (r.equal and r.ids_contiguous and r.status == "complete")][:5]:
        print(f"  e.g. turn {r.turn_id or '?'} ({r.replica}): {r.problem or 'joined deltas != stored reply'}")
        if r.problem is None:
            print(f"    joined {r.joined!r}\n    stored {r.stored!r}")


# -- the run ------------------------------------------------------------------------------------------------
async def run(
    stack: Stack,
    tap: LettaTap,
    turns: int,
    streams: int,
    hold: float,
    rounds: int = 1,
    resume_turns: int = 0,
    seed: int = 0,
) -> None:
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
    try:
        await added_latency(stack, tap, pool, turns)
        if streams > 0:
            await concurrent_streams(stack, pool, streams, hold, rounds)
        if resume_turns > 0:
            await resumes(stack, pool, resume_turns, seed)
    finally:
        await pool.close()
    for log in ("service", REPLICA_B) if resume_turns > 0 else ("service",):
        problems = service_log_problems(stack, log)
        print(f"{log} log: {sum(problems.values())} warning/error lines" + (":" if problems else ""))
        for line, count in problems.most_common(8):
            print(f"  {count}x {line}")


def service_log_problems(stack: Stack, log: str = "service") -> Counter[str]:
    """Warning/error/critical lines of a service process's JSON log (``logs/<log>.log``), counted by level and
    message."""
    path = stack.state_dir / "logs" / f"{log}.log"
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return Counter()
    found: Counter[str] = Counter()
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            if "Traceback" in line:
                found["traceback"] += 1
            continue
        if isinstance(record, dict) and record.get("level") in ("warning", "error", "critical"):
            found[f"{record['level']}: {record.get('msg')} {record.get('error', '')}"[:200]] += 1
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=40, help="measured turns per path for (a) and (b)")
    parser.add_argument(
        "--streams",
        type=int,
        default=DEFAULT_STREAMS,
        help=f"concurrent streams for (c), default {DEFAULT_STREAMS} (see bench/README.md for 200); 0 skips (c)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of concurrent streams for (c), same users (RSS growth check)"
    )
    parser.add_argument(
        "--hold", type=float, default=0.0, help="extra seconds the LLM waits before answering in (c) (double's fault)"
    )
    parser.add_argument(
        "--resumes", type=int, default=40, help="turns cut and resumed with Last-Event-ID for (d); 0 skips (d)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for (d)'s cut points (default: random)")
    parser.add_argument(
        "--service-env", action="append", default=[], metavar="KEY=VALUE", help="extra service setting (repeatable)"
    )
    parser.add_argument(
        "--letta-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Letta setting, e.g. LETTA_DISABLE_SQLALCHEMY_POOLING=false (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    banner("chat benchmark")
    # The service and the direct path both reach Letta through the tap (see bench/tap.py).
    tap = LettaTap("127.0.0.1", BENCH_PORTS["letta_port"]).start()
    service_env = {"LETTA_BASE_URL": tap.url, **parse_env(args.service_env)}
    try:
        with running_stack(service_env, parse_env(args.letta_env)) as stack:
            seed = args.seed if args.seed is not None else random.randrange(1_000_000)
            asyncio.run(run(stack, tap, args.turns, args.streams, args.hold, args.rounds, args.resumes, seed))
    finally:
        tap.stop()


if __name__ == "__main__":
    entry_point(main)
