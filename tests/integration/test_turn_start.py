"""The statement that starts a chat turn (rate-limit hit, profile, lease, user message in one round trip):
each outcome on the real Postgres, through the API in-process. Letta is unreachable here, so a turn that
gets past every check ends in the 503 that keeps the user's message as ``failed``."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from devstack.keys import SigningKey
from tests.integration.support import SERVICE_KEY, assert_problem, ready_user, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def service_env() -> dict[str, str]:
    return {"RATE_LIMIT_CHAT_PER_MINUTE": "2"}


NewUser = Callable[..., Awaitable[tuple[uuid.UUID, dict[str, str]]]]


@pytest.fixture
def new_user(database_url: str, signing_key: SigningKey) -> NewUser:
    """``await new_user()``: a signed-up user whose agent is active (``ready=False``: not yet) and their headers."""
    return functools.partial(ready_user, database_url, signing_key)


async def stored(db: asyncpg.Connection, user_id: uuid.UUID) -> list[tuple[str, str]]:
    rows = await db.fetch("select content, status from public.messages where user_id = $1 order by created_at", user_id)
    return [(r["content"], r["status"]) for r in rows]


async def lease_of(db: asyncpg.Connection, user_id: uuid.UUID) -> uuid.UUID | None:
    return await db.fetchval("select turn_id from private.chat_turn_leases where user_id = $1", user_id)


async def send(client: AsyncTestClient[Litestar], headers: dict[str, str], content: str = "hello") -> httpx.Response:
    return await client.post("/api/v1/chat/message", headers=headers, json={"content": content})


async def assert_documented(client: AsyncTestClient[Litestar], body: dict[str, Any], *same: str) -> None:
    """The problem matches the OpenAPI example of its status on the route: the same members, and the same
    values for ``same`` (members whose value does not depend on the request)."""
    schema = (await client.get("/schema/openapi.json")).json()
    response = schema["paths"]["/api/v1/chat/message"]["post"]["responses"][str(body["status"])]
    example = next(iter(response["content"]["application/problem+json"]["examples"].values()))["value"]
    assert set(body) - {"instance", "request_id"} == set(example)
    assert {k: body[k] for k in same} == {k: example[k] for k in same}


async def test_past_every_check_the_message_is_stored_then_unreachable_letta_is_503_and_the_lease_freed(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, new_user: NewUser
) -> None:
    user_id, headers = await new_user()
    response = await send(client, {**headers, "Accept": "text/event-stream"}, "are you there?")
    body = assert_problem(response, 503)
    assert response.headers["retry-after"] == "5" and body["turn_id"]
    await assert_documented(client, body, "title", "detail")
    assert await stored(db, user_id) == [("are you there?", "failed")]
    assert await db.fetchval(
        "select e.detail from private.message_errors e join public.messages m on m.id = e.message_id "
        "where m.user_id = $1",
        user_id,
    )
    assert await lease_of(db, user_id) is None
    assert (await send(client, headers, "again")).status_code == 503  # not a 409: the lease is free


async def test_a_refused_hit_stores_nothing_and_takes_no_lease(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, new_user: NewUser
) -> None:
    user_id, headers = await new_user()
    assert [(await send(client, headers, c)).status_code for c in ("one", "two")] == [503, 503]
    response = await send(client, headers, "three")
    body = assert_problem(response, 429)
    assert body["limit"] == 2 and body["bucket"] == "chat" and int(response.headers["retry-after"]) >= 1
    await assert_documented(client, body, "title", "bucket", "window_seconds")
    assert await stored(db, user_id) == [("one", "failed"), ("two", "failed")]
    assert await lease_of(db, user_id) is None


async def test_a_user_whose_agent_is_not_ready_gets_503_stores_nothing_and_provisioning_starts(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, new_user: NewUser
) -> None:
    user_id, headers = await new_user(ready=False)
    response = await send(client, headers)
    body = assert_problem(response, 503)
    assert body["agent_status"] == "pending" and response.headers["retry-after"] == "5"
    assert await stored(db, user_id) == []
    assert await lease_of(db, user_id) is None
    # Provisioning on demand ran (with LiteLLM unreachable here it fails, and says why).
    await wait_until(
        db, "select detail from private.provisioning_errors where user_id = $1", user_id, what="provisioning's error"
    )


async def test_a_live_lease_is_409_and_stores_nothing(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, new_user: NewUser
) -> None:
    user_id, headers = await new_user()
    running = uuid.uuid4()
    await db.execute(
        "insert into private.chat_turn_leases (user_id, turn_id, holder, expires_at) "
        "values ($1, $2, 'another-replica', now() + interval '30 seconds')",
        user_id,
        running,
    )
    # Its message, written by that replica: the refusal names the thread it runs in.
    thread_id = await db.fetchval(
        "insert into public.messages (user_id, turn_id, role, content, status) values ($1, $2, 'user', 'first', "
        "'pending') returning thread_id",
        user_id,
        running,
    )
    body = assert_problem(await send(client, headers), 409)
    assert body["title"] == "Turn In Progress" and body["thread_id"] == str(thread_id)
    await assert_documented(client, body, "type", "title", "status", "detail")
    assert await stored(db, user_id) == [("first", "pending")]
    assert await lease_of(db, user_id) == running  # untouched


async def test_a_deleted_user_with_a_valid_token_is_told_the_account_is_gone_and_nothing_is_written(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, new_user: NewUser
) -> None:
    user_id, headers = await new_user()
    await db.execute("delete from auth.users where id = $1", user_id)
    assert assert_problem(await send(client, headers), 401)["title"] == "Account Deleted"
    assert await stored(db, user_id) == []
    # Every route that needs the profile says the same (it used to be "still being set up", for ever).
    for path in ("/api/v1/agent/status", "/api/v1/user/profile", "/api/v1/chat/history"):
        assert assert_problem(await client.get(path, headers=headers), 401)["title"] == "Account Deleted"


async def test_the_service_role_has_no_turns(client: AsyncTestClient[Litestar]) -> None:
    assert_problem(await send(client, {"Authorization": f"Bearer {SERVICE_KEY}"}), 403)


async def test_the_same_refusals_over_websocket_are_error_frames_with_their_codes(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, new_user: NewUser
) -> None:
    user_id, headers = await new_user()
    with await client.websocket_connect("/api/v1/chat/stream") as socket:

        def receive() -> dict[str, Any]:
            frame: dict[str, Any] = socket.receive_json(timeout=10)
            return frame

        socket.send_json({"type": "auth", "token": headers["Authorization"].removeprefix("Bearer ")})
        assert receive() == {"type": "ready", "user_id": str(user_id)}
        frames = []
        for content in ("one", "two", "three"):
            socket.send_json({"type": "message", "content": content})
            frames.append(receive())
        unavailable, _, limited = frames
        assert unavailable["code"] == "agent_unavailable" and unavailable["status"] == 503 and unavailable["turn_id"]
        assert limited["type"] == "error" and limited["code"] == "rate_limited" and limited["status"] == 429
        assert limited["limit"] == 2 and limited["window_seconds"] == 60 and limited["retry_after"] >= 1
        socket.send_json({"type": "ping"})  # the socket stays open after a refusal
        assert receive() == {"type": "pong"}
    assert await stored(db, user_id) == [("one", "failed"), ("two", "failed")]


async def test_an_unexpected_failure_over_websocket_is_an_internal_error_frame_and_the_socket_stays_open(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, new_user: NewUser
) -> None:
    user_id, headers = await new_user()
    await db.execute("alter table public.messages rename to messages_away")  # the database is broken
    try:
        with await client.websocket_connect("/api/v1/chat/stream") as socket:
            socket.send_json({"type": "auth", "token": headers["Authorization"].removeprefix("Bearer ")})
            assert socket.receive_json(timeout=10)["type"] == "ready"
            socket.send_json({"type": "message", "content": "hello"})
            error = socket.receive_json(timeout=10)
            assert (error["type"], error["code"], error["status"]) == ("error", "internal", 500)
            socket.send_json({"type": "ping"})
            assert socket.receive_json(timeout=10) == {"type": "pong"}
    finally:
        await db.execute("alter table public.messages_away rename to messages")
    assert await lease_of(db, user_id) is None


async def test_a_turn_whose_replica_died_holds_new_turns_off_until_it_is_stored(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection, new_user: NewUser
) -> None:
    """Its lease expired, its message is still pending: a new turn would run beside Letta's run of the old one
    and be stored before it, so it waits for the recovery (found by the chaos benchmark)."""
    user_id, headers = await new_user()
    orphan = await db.fetchval(
        "insert into public.messages (user_id, turn_id, role, content, status) "
        "values ($1, gen_random_uuid(), 'user', 'asked before the crash', 'pending') returning turn_id",
        user_id,
    )
    await db.execute(
        "insert into private.chat_turn_leases (user_id, turn_id, holder, expires_at) "
        "values ($1, $2, 'replica-dead', now() - interval '1 second')",
        user_id,
        orphan,
    )
    refused = await send(client, headers, "hello again")
    assert assert_problem(refused, 409)["code"] == "turn_in_progress"
    assert await stored(db, user_id) == [("asked before the crash", "pending")]
    # Once the recovery has stored it, the user goes on (here to Letta being unreachable: past the lease).
    await db.execute("update public.messages set status = 'complete' where turn_id = $1", orphan)
    assert assert_problem(await send(client, headers, "hello again"), 503)["code"] == "agent_unavailable"
