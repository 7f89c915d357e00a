"""Hostile-input benchmark: what unauthenticated clients can make the service hold in memory.

Boots its own stack the way the other benchmarks do (``devstack.stack``, ``fresh=True``), under the name
``hostile`` and on ports of its own (pg 57322, Letta 38283, LiteLLM double 34000, service 38000, Edge
Functions 35321, GoTrue double 35322), so it never touches another stack. Only 127.0.0.1; every loop is bounded.
Then, with the service's VmRSS sampled every 50 ms (``/proc/<pid>/status``):

* **idle**: after a few warm-up requests and a WebSocket round trip, the median of 2 s of samples;
* **frames**: ``--sockets`` (100) unauthenticated WebSockets at once, each sending a text frame whose header
  announces ``--frame-mib`` (15) MiB, then its payload in 64 KiB writes until the server closes (or all is sent);
  printed: the close codes, the bytes each got to send, RSS peak above idle, and RSS above idle 5 s after;
* **held first frames**: ``--sockets`` unauthenticated WebSockets at once, each sending all but the last byte of
  a first frame as large as the server takes before authentication (16 KiB), then holding it for 5 s;
* **bodies**: ``--bodies`` (20) clients at once, each ``POST /api/v1/auth/register`` with a ``--body-mb`` (9.5) MB
  body in 64 KiB writes, once with ``Content-Length`` and once chunked (no length): statuses, peak and 5 s after;
* **heads**: ``--heads`` (100) connections that send a request line and nothing more: how many were answered
  408 and when the last was closed (``SERVER_HEADER_TIMEOUT_SECONDS``, 10 s by default).

Target: < 20 MiB above idle, during and after. Refuses to run while ``/tmp/bench_running`` exists (another
benchmark), and holds that file while it runs.

    .venv/bin/python -m bench.hostile [--sockets 100] [--frame-mib 15] [--bodies 20] [--body-mb 9.5] [--heads 100]
        [--service-env KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import statistics
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from bench.common import banner, booted, entry_point, parse_env, print_table, rss_kib, service_pid
from devstack.stack import Stack, StackConfig
from service.chat.websocket import MAX_FIRST_FRAME_BYTES

T = TypeVar("T")

HOST = "127.0.0.1"
PORTS = {
    "pg_port": 57322,
    "letta_port": 38283,
    "litellm_port": 34000,
    "service_port": 38000,
    "functions_port": 35321,
    "auth_port": 35322,
}
LOCK = Path("/tmp/bench_running")
CHUNK = 64 * 1024
AFTER_SECONDS = 5.0


# -- the stack and the lock --------------------------------------------------------------------------------------
@contextlib.contextmanager
def bench_lock() -> Iterator[None]:
    """Hold /tmp/bench_running for the run; refuse if another benchmark holds it."""
    try:
        fd = os.open(LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise SystemExit(f"{LOCK} exists: another benchmark is running; try again when it is gone") from None
    try:
        os.write(fd, f"bench.hostile pid {os.getpid()}\n".encode())
        os.close(fd)
        yield
    finally:
        LOCK.unlink(missing_ok=True)


@contextlib.contextmanager
def hostile_stack(service_env: Mapping[str, str]) -> Iterator[Stack]:
    """The stack under the name ``hostile`` on its own ports, always stopped."""
    with booted(StackConfig(name="hostile", fresh=True, service_env=dict(service_env), **PORTS)) as stack:  # type: ignore[arg-type]
        yield stack


# -- RSS ---------------------------------------------------------------------------------------------------------
class RssSampler:
    """VmRSS of the service every 50 ms while running."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append(rss_kib(self.pid))
            await asyncio.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self.samples = []
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def peak(self) -> int:
        return max(self.samples, default=rss_kib(self.pid))


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


async def measure(pid: int, idle: int, attack: Callable[[], Awaitable[T]]) -> tuple[T, int, int]:
    """Run ``attack`` while sampling; returns its result, the peak RSS above idle and the RSS above idle
    ``AFTER_SECONDS`` after it ended (KiB)."""
    with RssSampler(pid) as sampler:
        result = await attack()
    await asyncio.sleep(AFTER_SECONDS)
    return result, sampler.peak() - idle, rss_kib(pid) - idle


# -- attacks -----------------------------------------------------------------------------------------------------
async def oversized_frame(port: int, frame_bytes: int) -> tuple[str, int, float]:
    """One unauthenticated socket announcing ``frame_bytes``; returns the close code the client read (or the error
    it got instead: the server's close frame can be lost to the reset of a client still writing), the bytes it
    got to send, and the seconds from the frame header to the end of the connection."""
    reader, writer = await asyncio.open_connection(HOST, port)
    sent = 0
    started = time.monotonic()
    try:
        key = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET /api/v1/chat/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if not head.startswith(b"HTTP/1.1 101"):
            return f"handshake {head.split(b' ')[1].decode()}", 0, 0.0
        started = time.monotonic()
        writer.write(struct.pack("!BBQ", 0x81, 0x80 | 127, frame_bytes) + b"\x00\x00\x00\x00")
        reply = asyncio.ensure_future(reader.read(64))
        payload = b"x" * CHUNK
        try:
            while sent < frame_bytes and not reply.done():
                writer.write(payload)
                await writer.drain()
                sent += CHUNK
        except OSError:
            pass
        try:
            data = await asyncio.wait_for(reply, 10)
        except (TimeoutError, OSError) as exc:
            return type(exc).__name__, sent, time.monotonic() - started
        ended = time.monotonic() - started
        if len(data) >= 4 and data[0] == 0x88:
            return f"close {struct.unpack('!H', data[2:4])[0]}", sent, ended
        return f"other ({data[:8]!r})", sent, ended
    finally:
        writer.close()


async def held_frame(port: int, frame_bytes: int, hold: float) -> str:
    """One unauthenticated socket sending all but the last byte of a ``frame_bytes`` frame and holding it for
    ``hold`` seconds; returns "held" or how it ended earlier."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        key = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET /api/v1/chat/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if not head.startswith(b"HTTP/1.1 101"):
            return f"handshake {head.split(b' ')[1].decode()}"
        writer.write(
            struct.pack("!BBQ", 0x81, 0x80 | 127, frame_bytes) + b"\x00\x00\x00\x00" + b"x" * (frame_bytes - 1)
        )
        await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(64), hold)
        except TimeoutError:
            return "held"
        return f"close {struct.unpack('!H', data[2:4])[0]}" if data[:1] == b"\x88" else "closed"
    finally:
        writer.close()


async def big_body(port: int, body_bytes: int, chunked: bool) -> tuple[str, int]:
    """One ``POST /api/v1/auth/register`` with ``body_bytes``; returns (status or what happened, bytes sent)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    sent = 0
    try:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % body_bytes
        writer.write(
            b"POST /api/v1/auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + framing
            + b"\r\n\r\n"
        )
        reply = asyncio.ensure_future(reader.readuntil(b"\r\n"))
        payload = (b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n") if chunked else b"x" * CHUNK
        try:
            # Like a client that sends its whole body before reading the answer (most do).
            while sent < body_bytes:
                writer.write(payload)
                await writer.drain()
                sent += CHUNK
            if chunked:
                writer.write(b"0\r\n\r\n")
        except OSError:
            pass
        try:
            line = await asyncio.wait_for(reply, 30)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            return type(exc).__name__, sent
        return line.split(b" ")[1].decode(), sent
    finally:
        writer.close()


async def incomplete_head(port: int, limit_s: float) -> tuple[str, float]:
    """A request line and nothing more; returns (status or "closed", seconds until the server closed)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    started = time.monotonic()
    try:
        writer.write(b"GET /health/live HTTP/1.1\r\n")
        try:
            data = await asyncio.wait_for(reader.read(), limit_s)
        except TimeoutError:
            return "still open", time.monotonic() - started
        except OSError as exc:
            return type(exc).__name__, time.monotonic() - started
        status = data.split(b" ")[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"
        return status, time.monotonic() - started
    finally:
        writer.close()


# -- the run -----------------------------------------------------------------------------------------------------
async def warm_up(port: int) -> None:
    for _ in range(20):
        _, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
    await oversized_frame(port, 1024 * 1024)
    await big_body(port, 128 * 1024, chunked=False)
    await asyncio.sleep(1)


async def run(stack: Stack, args: argparse.Namespace) -> None:
    pid = service_pid(stack)
    port = stack.config.service_port
    await warm_up(port)
    with RssSampler(pid) as sampler:
        await asyncio.sleep(2)
    idle = int(statistics.median(sampler.samples))
    print(f"service RSS idle: {mib(idle)}", flush=True)

    rows: list[list[str]] = []

    frame_bytes = args.frame_mib * 1024 * 1024
    frames, peak, after = await measure(
        pid, idle, lambda: asyncio.gather(*(oversized_frame(port, frame_bytes) for _ in range(args.sockets)))
    )
    outcomes = Counter(code for code, _, _ in frames)
    rows.append(
        [
            f"{args.sockets} sockets, {args.frame_mib} MiB frame, unauthenticated",
            ", ".join(f"{code} x{n}" for code, n in outcomes.most_common()),
            f"{mib(max(n for _, n, _ in frames) / 1024)} max, closed after {max(s for _, _, s in frames):.2f}s max",
            mib(peak),
            mib(after),
        ]
    )

    held, peak, after = await measure(
        pid, idle, lambda: asyncio.gather(*(held_frame(port, MAX_FIRST_FRAME_BYTES, 5.0) for _ in range(args.sockets)))
    )
    rows.append(
        [
            f"{args.sockets} sockets, unfinished {MAX_FIRST_FRAME_BYTES // 1024} KiB first frame, held 5 s",
            ", ".join(f"{outcome} x{n}" for outcome, n in Counter(held).most_common()),
            f"{mib(args.sockets * MAX_FIRST_FRAME_BYTES / 1024)} in all",
            mib(peak),
            mib(after),
        ]
    )

    body_bytes = int(args.body_mb * 1_000_000)
    for chunked in (False, True):

        def bodies_at_once(chunked: bool = chunked) -> Awaitable[list[tuple[str, int]]]:
            return asyncio.gather(*(big_body(port, body_bytes, chunked) for _ in range(args.bodies)))

        bodies, peak, after = await measure(pid, idle, bodies_at_once)
        outcomes = Counter(status for status, _ in bodies)
        rows.append(
            [
                f"{args.bodies} bodies of {args.body_mb} MB, {'chunked' if chunked else 'Content-Length'}",
                ", ".join(f"{status} x{n}" for status, n in outcomes.most_common()),
                f"{mib(max(n for _, n in bodies) / 1024)} max (dropped by the server)",
                mib(peak),
                mib(after),
            ]
        )

    heads, peak, after = await measure(
        pid, idle, lambda: asyncio.gather(*(incomplete_head(port, 30.0) for _ in range(args.heads)))
    )
    outcomes = Counter(status for status, _ in heads)
    rows.append(
        [
            f"{args.heads} request lines, nothing more",
            ", ".join(f"{status} x{n}" for status, n in outcomes.most_common()),
            f"closed after {max(s for _, s in heads):.1f}s max",
            mib(peak),
            mib(after),
        ]
    )

    print_table(
        f"service RSS above idle ({mib(idle)}); target < 20 MiB",
        ["attack", "outcome", "client sent / connection closed", "peak above idle", f"{AFTER_SECONDS:g}s after"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--frame-mib", type=int, default=15)
    parser.add_argument("--bodies", type=int, default=20)
    parser.add_argument("--body-mb", type=float, default=9.5)
    parser.add_argument("--heads", type=int, default=100)
    parser.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    for name in ("sockets", "frame_mib", "bodies", "heads"):
        if not 1 <= getattr(args, name) <= 1000:
            raise SystemExit(f"--{name.replace('_', '-')} must be between 1 and 1000")
    if not 0 < args.body_mb <= 100:
        raise SystemExit("--body-mb must be between 0 and 100")
    with bench_lock():
        banner("hostile input")
        with hostile_stack(parse_env(args.service_env)) as stack:
            asyncio.run(run(stack, args))


if __name__ == "__main__":
    entry_point(main)
