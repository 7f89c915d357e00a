"""Shared by the benchmarks: a dedicated stack, users, /proc readings, percentiles and tables (SSE: devstack.sse).

The benchmarks boot their own stack (name ``bench``, its own ports, ``fresh=True``) with the project's
devstack, so they never touch a ``make dev`` or test stack that may be running at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg

from devstack.gotrue import sign_up
from devstack.stack import Stack, StackConfig

BENCH_PORTS = {
    "pg_port": 56322,
    "letta_port": 28283,
    "litellm_port": 24000,
    "service_port": 28000,
    "functions_port": 25321,
    "auth_port": 25322,  # the GoTrue double, on stacks that have one
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` command-line pairs as a dict."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def bench_config(letta_env: Mapping[str, str] | None = None, **service_env: str) -> StackConfig:
    env = {
        "PROVISIONING_MAX_ATTEMPTS": "30",
        # The per-user limiter still runs on every chat request (its cost is part of the figures); the bench
        # sends more than the default 20 turns a minute per user, so the limit itself is lifted.
        "RATE_LIMIT_CHAT_PER_MINUTE": "1000000",
    }
    env.update(service_env)
    known = {f.name for f in dataclasses.fields(StackConfig)}
    ports = {name: port for name, port in BENCH_PORTS.items() if name in known}
    return StackConfig(name="bench", fresh=True, service_env=env, letta_env=dict(letta_env or {}), **ports)  # type: ignore[arg-type]


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def running_stack(
    service_env: Mapping[str, str] | None = None, letta_env: Mapping[str, str] | None = None
) -> Iterator[Stack]:
    """Boot the bench stack (fresh data) and always stop it (``booted``)."""
    if service_env or letta_env:
        print(f"extra environment: service {dict(service_env or {})}, Letta {dict(letta_env or {})}", flush=True)
    with booted(bench_config(dict(letta_env or {}), **(service_env or {}))) as stack:
        yield stack


@contextlib.contextmanager
def booted(config: StackConfig) -> Iterator[Stack]:
    """Boot a stack and always stop it: on return, exceptions, Ctrl-C and SIGTERM."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    stack = Stack(config)
    started = time.monotonic()
    print(f"booting the {config.name} stack (state in {stack.state_dir}) ...", flush=True)
    try:
        stack.up()
        print(f"stack up in {time.monotonic() - started:.1f}s", flush=True)
        yield stack
    finally:
        # A second Ctrl-C (or SIGTERM) must not abort the clean-up half-way and leave processes behind.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stopping = time.monotonic()
        print(f"stopping the {config.name} stack ...", flush=True)
        try:
            stack.down()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)
        print(f"stack stopped in {time.monotonic() - stopping:.1f}s", flush=True)


def entry_point(main: Callable[[], None]) -> None:
    """Run a benchmark's main; an interrupt (Ctrl-C, SIGTERM) ends it with status 130 and no traceback (the
    stack has been stopped by then)."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def service_pid(stack: Stack) -> int:
    process = stack.processes["service"].process
    assert process is not None
    return process.pid


# -- statistics and output ------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), like numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def p95(values: Sequence[float]) -> float:
    return percentile(values, 95)


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def latency_row(label: str, seconds: Sequence[float]) -> list[str]:
    """[label, n, median, p95, max] in milliseconds."""
    return [label, str(len(seconds)), ms(median(seconds)), ms(p95(seconds)), ms(max(seconds) if seconds else math.nan)]


LATENCY_HEADERS = ["", "n", "median", "p95", "max"]


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A small aligned table: first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    print(f"\n{title}")
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    print(flush=True)


def banner(text: str) -> None:
    print(f"\n=== {text} ({datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC, {os.cpu_count()} CPUs) ===", flush=True)


# -- the service process ------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is fields[0], so utime (field 14) is fields[11] and stime fields[12].
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """VmRSS of the process in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- users --------------------------------------------------------------------------------------------------
@dataclass
class BenchUser:
    id: uuid.UUID
    email: str
    token: str
    signed_up_at: float  # perf_counter when the signup transaction had committed
    active_at: float | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def sign_up_user(stack: Stack, name: str = "Bench") -> BenchUser:
    """A GoTrue-shaped signup (devstack.gotrue): INSERT + UPDATE in one transaction on auth.users.

    The commit is the last statement of ``sign_up``; its return (after a sub-millisecond close) is taken as
    the commit time.
    """
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    user_id = await sign_up(stack.database_url, email, {"full_name": name})
    committed = time.perf_counter()
    token = stack.access_token(user_id, email=email, expires_in=6 * 3600)
    return BenchUser(user_id, email, token, committed)


class ActiveWatcher:
    """Polls ``user_profiles.agent_status`` of every watched user every ``interval`` seconds (one query
    per poll for all of them) and stamps ``active_at`` on the poll that first sees 'active'."""

    def __init__(self, pool: asyncpg.Pool[Any], interval: float = 0.02) -> None:
        self.pool = pool
        self.interval = interval
        self.pending: dict[uuid.UUID, BenchUser] = {}
        self.statuses: dict[uuid.UUID, str] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def watch(self, user: BenchUser) -> None:
        self.pending[user.id] = user
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self.pending:
            rows = await self.pool.fetch(
                "select id, agent_status from public.user_profiles where id = any($1::uuid[])", list(self.pending)
            )
            now = time.perf_counter()
            for row in rows:
                self.statuses[row["id"]] = row["agent_status"]
                if row["agent_status"] == "active":
                    user = self.pending.pop(row["id"])
                    user.active_at = now
                    self._changed.set()
            await asyncio.sleep(self.interval)

    async def wait(self, users: Sequence[BenchUser], limit_s: float) -> list[BenchUser]:
        """Wait until all ``users`` are active or ``limit_s`` seconds pass; returns those still not active."""
        deadline = time.monotonic() + limit_s
        while any(u.active_at is None for u in users):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 1.0))
        return [u for u in users if u.active_at is None]

    async def close(self) -> None:
        self.pending.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def provision_users(
    stack: Stack, pool: asyncpg.Pool[Any], count: int, concurrency: int = 8, limit_s: float = 600.0, name: str = "Bench"
) -> list[BenchUser]:
    """Sign ``count`` users up through the real trigger path, at most ``concurrency`` provisioning at once,
    and wait until all are active. Raises if some never become active."""
    watcher = ActiveWatcher(pool, interval=0.1)
    gate = asyncio.Semaphore(concurrency)
    users: list[BenchUser] = []
    deadline = time.monotonic() + limit_s
    started = time.monotonic()
    active = 0

    async def one(index: int) -> None:
        nonlocal active
        async with gate:
            user = await sign_up_user(stack, f"{name} {index}")
            users.append(user)
            watcher.watch(user)
            late = await watcher.wait([user], max(1.0, deadline - time.monotonic()))
            if late:
                raise RuntimeError(f"user {user.id} not active: {watcher.statuses.get(user.id)}")
            active += 1
            if active % 25 == 0 or active == count:
                print(f"  provisioned {active}/{count} ({time.monotonic() - started:.0f}s)", flush=True)

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        await watcher.close()
    return users
