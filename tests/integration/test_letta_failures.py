"""Letta failing around a turn, through the service's real HTTP stack (httpx on aiohttp's transport) and
the real Postgres: a socket stands where Letta would be and misbehaves on purpose.

Unreachable Letta (503, message kept) is in test_auth_api; here: Letta took the message but never
answered (504), and Letta dropped the connection mid-reply (error event, partial reply kept); in both, the
Letta run is cancelled so that a resend cannot run beside it."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from devstack.keys import SigningKey
from devstack.sse import parse_json_events
from service.chat import service as chat_service_module
from service.chat import store as chat_store
from service.clients import letta as letta_module
from tests.integration.support import app_client, assert_problem, ready_user

pytestmark = pytest.mark.integration

TOKEN_EVENT = {"message_type": "assistant_message", "id": "message-1", "run_id": "run-1", "content": "Partial"}
Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    """The request line and the body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    return head.split(b"\r\n")[0].decode(), await reader.readexactly(length)


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the service gives up and closes


async def drops_mid_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    event = f"data: {json.dumps(TOKEN_EVENT)}\n\n".encode()
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.transport.abort()  # no last chunk: the connection is simply gone


USAGE_EVENT = {"message_type": "usage_statistics", "prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}


async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, usage: bool = True) -> None:
    """A whole, successful turn (with Letta's usage totals unless ``usage`` is False), then the connection is
    closed. The same answer goes to any other request, e.g. the run-usage lookup: garbage to a JSON client."""
    events = [TOKEN_EVENT, {"message_type": "stop_reason", "stop_reason": "end_turn"}]
    events += [USAGE_EVENT] if usage else []
    body = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n")
    writer.write(b"content-length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


class FakeLetta:
    """A socket where Letta would be: a turn request gets ``behaviour``; a cancel is answered and recorded; the
    health check answers as Letta 0.16.8 does."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.cancels: list[tuple[str, object]] = []  # (request line, JSON body)
        self.turns: list[str] = []  # request lines of turns

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, body = await read_request(reader)
        if line.startswith("GET /v1/health/ "):  # the version check (service/clients/letta_version.py)
            await answer_json(writer, b'{"version":"0.16.8","status":"ok"}')
            return
        if "/messages/cancel" not in line:
            self.turns.append(line)
            await self.behaviour(reader, writer)
            return
        self.cancels.append((line, json.loads(body or b"null")))
        await answer_json(writer, b'{"run-1": "cancelled"}')


async def answer_json(writer: asyncio.StreamWriter, answer: bytes) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n")
    writer.write(b"content-length: %d\r\n\r\n%s" % (len(answer), answer))
    await writer.drain()
    writer.close()


@pytest.fixture
def letta_socket() -> Iterator[Callable[[FakeLetta], str]]:
    """Starts a misbehaving socket in its own thread: the app under AsyncTestClient runs in another event loop
    and the test's own loop is blocked while it waits for a response."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def start(letta: FakeLetta) -> str:
        server = asyncio.run_coroutine_threadsafe(asyncio.start_server(letta, "127.0.0.1", 0), loop).result()
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)


def app_for(database_url: str, signing_key: SigningKey, letta_url: str) -> AsyncTestClient[Any]:
    return app_client(database_url, signing_key, LETTA_BASE_URL=letta_url, LOG_LEVEL="error")


async def stored(db: asyncpg.Connection[Any], user_id: object) -> list[tuple[str, str, str]]:
    """The user's messages; also checks that the lease is gone and the day's usage counts every message."""
    rows = await db.fetch(
        "select role, content, status from public.messages where user_id = $1 order by created_at, role desc",
        user_id,
    )
    assert not await db.fetchval("select count(*) from private.chat_turn_leases where user_id = $1", user_id)
    counted = await db.fetchval("select total_messages from public.usage_metrics where user_id = $1", user_id)
    assert counted == len(rows)
    return [(r["role"], r["content"], r["status"]) for r in rows]


async def test_letta_that_took_the_message_but_never_answered_is_504_and_the_message_is_kept(
    database_url: str,
    db: asyncpg.Connection[Any],
    signing_key: SigningKey,
    letta_socket,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setattr(letta_module, "STREAM_TIMEOUT", httpx.Timeout(5.0, read=0.5))
    user_id, headers = await ready_user(database_url, signing_key)
    letta = FakeLetta(never_answers)
    async with app_for(database_url, signing_key, letta_socket(letta)) as client:
        response = await client.post("/api/v1/chat/message", headers=headers, json={"content": "anyone there?"})
    body = assert_problem(response, 504)
    assert "please retry" in body["detail"] and body["turn_id"]
    assert await stored(db, user_id) == [("user", "anyone there?", "failed")]
    # The run id was never seen: Letta is asked to cancel every active run of the agent, before the lease went.
    assert letta.cancels == [("POST /v1/agents/agent-x/messages/cancel HTTP/1.1", {})]


async def test_letta_dropping_the_connection_mid_reply_is_an_error_event_and_the_partial_reply_is_kept(
    database_url: str,
    db: asyncpg.Connection[Any],
    signing_key: SigningKey,
    letta_socket,  # type: ignore[no-untyped-def]
) -> None:
    user_id, headers = await ready_user(database_url, signing_key)
    letta = FakeLetta(drops_mid_reply)
    async with app_for(database_url, signing_key, letta_socket(letta)) as client:
        response = await client.post(
            "/api/v1/chat/message", headers={**headers, "Accept": "text/event-stream"}, json={"content": "tell me"}
        )
    assert response.status_code == 200
    events = parse_json_events(response.text)
    assert [name for name, _ in events] == ["turn", "delta", "error", "done"]
    assert events[1][1] == {"text": "Partial"}
    assert events[2][1]["code"] == "agent_unavailable"
    assert events[3][1]["status"] == "failed"
    assert await stored(db, user_id) == [("user", "tell me", "failed"), ("assistant", "Partial", "failed")]
    # Letta may still be writing that reply: its run is cancelled before another turn can start.
    assert letta.cancels == [("POST /v1/agents/agent-x/messages/cancel HTTP/1.1", {"run_ids": ["run-1"]})]


async def test_a_turn_goes_to_the_agent_the_profile_names_now(
    database_url: str,
    db: asyncpg.Connection[Any],
    signing_key: SigningKey,
    letta_socket,  # type: ignore[no-untyped-def]
) -> None:
    """The service builds a turn's request for the user's previous agent while Postgres starts the turn; after
    a reset (a new agent id in the profile) the turn must still go to the new agent."""
    user_id, headers = await ready_user(database_url, signing_key)
    letta = FakeLetta(answers)
    async with app_for(database_url, signing_key, letta_socket(letta)) as client:
        for agent_id in ("agent-x", "agent-x", "agent-after-reset"):
            await db.execute("update public.user_profiles set letta_agent_id = $2 where id = $1", user_id, agent_id)
            response = await client.post("/api/v1/chat/message", headers=headers, json={"content": "hi"})
            assert response.status_code == 200 and response.json()["content"] == "Partial", response.text
    assert [line.split()[1] for line in letta.turns] == [
        "/v1/agents/agent-x/messages",
        "/v1/agents/agent-x/messages",
        "/v1/agents/agent-after-reset/messages",
    ]


@pytest.mark.timeout(60)  # the regression is a turn that never ends: fail before the global limit
async def test_a_garbled_answer_after_the_stream_does_not_leave_the_turn_without_an_outcome(
    database_url: str,
    db: asyncpg.Connection[Any],
    signing_key: SigningKey,
    letta_socket,  # type: ignore[no-untyped-def]
) -> None:
    """No usage totals in the stream, so the service asks Letta for the run's usage, and gets an event stream
    instead of JSON (the SDK raises a parse error, not an API error). The turn used to crash there: no ``done``,
    the lease held until it expired, the message left pending."""
    user_id, headers = await ready_user(database_url, signing_key)
    letta = FakeLetta(functools.partial(answers, usage=False))
    async with app_for(database_url, signing_key, letta_socket(letta)) as client:
        response = await client.post("/api/v1/chat/message", headers=headers, json={"content": "hi"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "complete" and response.json()["total_tokens"] == 0
    assert [line.split()[:2] for line in letta.turns] == [
        ["POST", "/v1/agents/agent-x/messages"],
        ["GET", "/v1/runs/run-1/usage"],
    ]
    assert await stored(db, user_id) == [("user", "hi", "complete"), ("assistant", "Partial", "complete")]


async def row_apart(database_url: str, statement: str, *args: Any) -> asyncpg.Record | None:
    """A statement on a connection of its own: the fake Letta runs in another event loop than the test's pool."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchrow(statement, *args)
    finally:
        await conn.close()


async def test_a_turn_whose_stream_is_slow_to_open_keeps_its_lease(
    database_url: str,
    db: asyncpg.Connection[Any],
    signing_key: SigningKey,
    letta_socket,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under load Letta has taken longer to start answering than a lease lasts. The lease must be renewed from the
    moment the turn begins, not only once the stream is open: a lease that expired meanwhile let the recovery fail
    a turn that was still running, and its reply was then lost (found by bench/chat.py at 200 streams)."""
    monkeypatch.setattr(chat_store, "LEASE_SECONDS", 1)
    monkeypatch.setattr(chat_service_module, "LEASE_RENEW_SECONDS", 0.2)
    user_id, headers = await ready_user(database_url, signing_key)
    lease_live_at_answer: list[bool] = []

    async def slow_to_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2.5)  # two and a half leases
        lease = await row_apart(
            database_url, "select expires_at > now() as live from private.chat_turn_leases where user_id = $1", user_id
        )
        lease_live_at_answer.append(lease is not None and lease["live"])
        await answers(reader, writer)

    letta = FakeLetta(slow_to_open)
    async with app_for(database_url, signing_key, letta_socket(letta)) as client:
        response = await client.post("/api/v1/chat/message", headers=headers, json={"content": "take your time"})
    assert response.status_code == 200, response.text
    assert lease_live_at_answer == [True]
    assert await stored(db, user_id) == [("user", "take your time", "complete"), ("assistant", "Partial", "complete")]


async def test_a_cancel_while_letta_is_still_opening_the_stream_stops_the_turn(
    database_url: str,
    db: asyncpg.Connection[Any],
    signing_key: SigningKey,
    letta_socket,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop asked on another replica before Letta starts answering reaches the turn (the lease keeper has it from
    the statement that starts it): the run Letta then starts is cancelled, and the turn is stored as cancelled."""
    monkeypatch.setattr(chat_service_module, "LEASE_RENEW_SECONDS", 0.2)
    user_id, headers = await ready_user(database_url, signing_key)

    async def stopped_while_opening(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # What ChatService.request_cancel on another replica records first.
        assert await row_apart(database_url, chat_store.REQUEST_CANCEL, user_id) is not None
        await asyncio.sleep(1.0)  # a few renewals: this replica acts on it while the stream is still opening
        await answers(reader, writer)

    letta = FakeLetta(stopped_while_opening)
    async with app_for(database_url, signing_key, letta_socket(letta)) as client:
        response = await client.post("/api/v1/chat/message", headers=headers, json={"content": "never mind"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled", response.text
    # Every active run of the agent while the run id was unknown, then the run of the stream that opened.
    assert [line.split()[1] for line, _ in letta.cancels] == ["/v1/agents/agent-x/messages/cancel"] * 2
    rows = await stored(db, user_id)
    assert [(role, status) for role, _, status in rows] == [("user", "complete"), ("assistant", "cancelled")], rows
    assert rows[1][1] == ""  # nothing of the reply was read: the stream was closed as soon as it opened
