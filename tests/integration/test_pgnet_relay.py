"""The pg_net stand-in end to end: net.http_post queues a request at COMMIT and the relay delivers
it to a real local HTTP receiver, retrying 5xx and connection errors, not 4xx.

Uses a fresh copy of the migrated template database (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import pytest

from devstack.doubles.pgnet_relay import RelaySettings, run_relay

pytestmark = pytest.mark.integration

FAST = RelaySettings(max_attempts=3, poll_interval=0.2, base_backoff=0.05, max_backoff=0.2)


@dataclass
class Receiver:
    """A tiny HTTP server answering each request with the next scripted status (then 200)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def for_path(self, path: str) -> list[tuple[str, str, dict[str, str], bytes]]:
        with self.lock:
            return [r for r in self.requests if r[1].startswith(path)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                state.requests.append(("POST", self.path, dict(self.headers.items()), body))
                status = state.statuses.pop(0) if state.statuses else 200
            payload = json.dumps({"status": status}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def db_url(database_url: str) -> str:
    return database_url


@pytest.fixture
async def relay(db_url: str) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_relay(db_url, stop, FAST))
    yield
    stop.set()
    await asyncio.wait_for(task, timeout=10)


async def enqueue(db_url: str, url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        request_id: int = await conn.fetchval(
            "select net.http_post(url := $1, body := $2::jsonb, headers := $3::jsonb)",
            url,
            json.dumps(body),
            json.dumps(headers or {"Content-Type": "application/json"}),
        )
        return request_id
    finally:
        await conn.close()


async def queue_row(db_url: str, request_id: int) -> asyncpg.Record:
    conn = await asyncpg.connect(db_url)
    try:
        row = await conn.fetchrow(
            "select q.attempts, q.delivered_at, q.last_status, q.last_error, r.status_code, r.error_msg "
            "from net.http_request_queue q left join net._http_response r on r.id = q.id where q.id = $1",
            request_id,
        )
        assert row is not None
        return row
    finally:
        await conn.close()


async def wait_for(db_url: str, request_id: int, done: Callable[[asyncpg.Record], object]) -> asyncpg.Record:
    row = await queue_row(db_url, request_id)
    try:
        async with asyncio.timeout(10):
            while not done(row):
                await asyncio.sleep(0.05)
                row = await queue_row(db_url, request_id)
    except TimeoutError:
        pytest.fail(f"request {request_id} not done in time: {dict(row)}")
    return row


async def test_delivers_after_commit_and_retries_a_503(db_url: str, receiver: Receiver, relay: None) -> None:
    path = f"/hook/{uuid.uuid4()}"
    receiver.statuses = [503]
    body = {"type": "INSERT", "table": "users", "schema": "auth", "record": {"id": "x"}, "old_record": None}
    request_id = await enqueue(
        db_url, receiver.url(path), body, {"Content-Type": "application/json", "x-webhook-secret": "s3cret"}
    )

    row = await wait_for(db_url, request_id, lambda r: r["delivered_at"] is not None)

    assert row["attempts"] == 2
    assert row["last_status"] == 200
    assert row["last_error"] is None
    assert row["status_code"] == 200  # net._http_response holds the latest attempt
    received = receiver.for_path(path)
    assert len(received) == 2  # the 503, then the retry
    for _method, _path, headers, raw in received:
        assert json.loads(raw) == body
        assert headers["x-webhook-secret"] == "s3cret"
        assert headers["Content-Type"] == "application/json"


async def test_a_4xx_is_final(db_url: str, receiver: Receiver, relay: None) -> None:
    path = f"/hook/{uuid.uuid4()}"
    receiver.statuses = [401]
    request_id = await enqueue(db_url, receiver.url(path), {"hello": "world"})

    row = await wait_for(db_url, request_id, lambda r: r["delivered_at"] is not None)

    assert row["attempts"] == 1
    assert row["last_status"] == 401
    await asyncio.sleep(0.3)
    assert len(receiver.for_path(path)) == 1


async def test_connection_errors_are_retried_up_to_max_attempts(db_url: str, relay: None) -> None:
    # A port nobody listens on: bind, note the port, close.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    request_id = await enqueue(db_url, f"http://127.0.0.1:{port}/gone", {"hello": "world"})

    row = await wait_for(db_url, request_id, lambda r: r["attempts"] >= FAST.max_attempts and r["last_error"])

    assert row["delivered_at"] is None
    assert row["status_code"] is None
    assert row["error_msg"]
    await asyncio.sleep(0.5)
    assert (await queue_row(db_url, request_id))["attempts"] == FAST.max_attempts  # gave up


async def test_rolled_back_request_is_never_sent(db_url: str, receiver: Receiver, relay: None) -> None:
    path = f"/hook/{uuid.uuid4()}"
    conn = await asyncpg.connect(db_url)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.fetchval("select net.http_post($1, '{}'::jsonb)", receiver.url(path))
        await asyncio.sleep(0.5)  # the relay polls meanwhile: the row is invisible before COMMIT
        await tx.rollback()
    finally:
        await conn.close()
    await asyncio.sleep(0.5)
    assert receiver.for_path(path) == []
