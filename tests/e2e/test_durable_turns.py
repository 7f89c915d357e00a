"""Turns that outlive their replica, and outages, on the real stack: the service is SIGKILLed mid-turn and
Postgres is stopped mid-turn, as production has them."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import websockets

from devstack.sse import aiter_json_events
from tests.e2e.conftest import StackClient, User

pytestmark = pytest.mark.e2e

SLOW = "[[slow]] tell me a long story"  # the scripted model's 20 words, 100 ms apart
LEASE_AND_GRACE = 30 + 2 + 3  # the lease, the recovery's grace, one recovery interval (jittered)


async def stored_turn(client: StackClient, turn_id: str) -> dict[str, dict[str, Any]]:
    rows = await client.db.fetch("select * from public.messages where turn_id = $1::uuid", turn_id)
    return {row["role"]: dict(row) for row in rows}


async def start_turn_then(
    client: StackClient, user: User, content: str, action: Any, thread_id: str | None = None
) -> str:
    """Stream a turn (in the default thread, or ``thread_id``); at its first delta run ``action`` (which may kill
    the service) and hang up."""
    turn_id = None
    async with client.http.stream(
        "POST",
        f"{client.stack.config.service_url}/api/v1/chat/message",
        headers={**user.headers, "Accept": "text/event-stream"},
        json={"content": content, **({"thread_id": thread_id} if thread_id else {})},
        timeout=60,
    ) as response:
        async for name, data in aiter_json_events(response):
            if name == "turn":
                turn_id = data["turn_id"]
            if name == "delta":
                break
        assert turn_id
        await action()
    return turn_id


async def reference_reply(client: StackClient, content: str) -> str:
    """What the scripted model answers ``content`` with when nothing fails (it answers every user alike)."""
    events = await client.chat_stream(await client.sign_up("Ref"), content)
    return "".join(data["text"] for name, data in events if name == "delta")


def kill_and_restart(client: StackClient) -> Any:
    async def action() -> None:
        client.stack.kill_service()
        await asyncio.to_thread(client.stack.start_service)

    return action


async def test_a_turn_whose_service_was_killed_is_stored_from_letta(client: StackClient) -> None:
    expected = await reference_reply(client, SLOW)
    user = await client.sign_up("Kim")
    killed_at = time.monotonic()
    turn_id = await start_turn_then(client, user, SLOW, kill_and_restart(client))

    await client.wait_for(
        "select status <> 'pending' from public.messages where turn_id = $1::uuid and role = 'user'",
        turn_id,
        timeout=LEASE_AND_GRACE + 15,
    )
    recovered_after = time.monotonic() - killed_at
    turn = await stored_turn(client, turn_id)
    assert turn["user"]["status"] == "complete"
    reply = turn["assistant"]
    assert reply["status"] == "complete" and reply["content"] == expected
    assert reply["letta_run_id"] and reply["prompt_tokens"] > 0 and reply["completion_tokens"] > 0
    assert reply["cost"] is not None and reply["cost"] > 0
    day = await client.db.fetchrow("select * from public.usage_metrics where user_id = $1", user.id)
    assert day["total_messages"] == 2 and day["total_tokens"] == reply["tokens_used"]
    assert recovered_after < LEASE_AND_GRACE + 10, recovered_after
    # The lease went with the stored turn: the next message is accepted at once.
    assert (await client.chat(user, "hello again")).status_code == 200


async def test_cancel_frees_a_turn_whose_service_died_at_once(client: StackClient) -> None:
    user = await client.sign_up("Lou")
    turn_id = await start_turn_then(client, user, SLOW, kill_and_restart(client))

    cancelled = await client.http.post(f"{client.stack.config.service_url}/api/v1/chat/cancel", headers=user.headers)
    assert cancelled.status_code == 202, cancelled.text
    # No waiting for the dead replica's lease: the next message is accepted now.
    assert (await client.chat(user, "are you there?")).status_code == 200
    turn = await stored_turn(client, turn_id)
    assert turn["user"]["status"] != "pending"
    assert not await client.db.fetchval(
        "select exists (select 1 from private.chat_turn_leases where turn_id = $1::uuid)", turn_id
    )


async def test_a_websocket_cancel_frees_a_turn_started_elsewhere(client: StackClient) -> None:
    user = await client.sign_up("Mo")
    turn_id = await start_turn_then(client, user, SLOW, kill_and_restart(client))
    url = client.stack.config.service_url.replace("http://", "ws://") + "/api/v1/chat/stream"
    async with websockets.connect(url) as socket:
        await socket.send(json.dumps({"type": "auth", "token": user.token}))
        assert json.loads(await socket.recv())["type"] == "ready"
        await socket.send(json.dumps({"type": "cancel"}))
        await socket.send(json.dumps({"type": "message", "content": "hi"}))
        frames = []
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(await asyncio.wait_for(socket.recv(), 30)))
    assert [f for f in frames if f["type"] == "error"] == [], frames
    assert frames[0]["type"] == "turn" and frames[-1]["type"] == "done"
    assert (await stored_turn(client, turn_id))["user"]["status"] != "pending"


async def test_postgres_down_mid_turn_is_503_then_the_turn_is_stored(client: StackClient) -> None:
    user = await client.sign_up("Ned")
    base = client.stack.config.service_url
    outage: dict[str, Any] = {}
    done: dict[str, Any] = {}

    async def probe_routes() -> None:
        for method, path in [
            ("GET", "/api/v1/auth/me"),
            ("GET", "/api/v1/chat/history"),
            ("GET", "/api/v1/agent/status"),
            ("GET", "/api/v1/agent/memory"),
            ("GET", "/api/v1/user/usage"),
            ("POST", "/api/v1/chat/message"),
        ]:
            body = {"content": "hi"} if method == "POST" else None
            outage[path] = await client.http.request(method, f"{base}{path}", headers=user.headers, json=body)
        outage["ready"] = await client.http.get(f"{base}/health/ready")

    turn_id = None
    started = time.monotonic()
    async with client.http.stream(
        "POST",
        f"{base}/api/v1/chat/message",
        headers={**user.headers, "Accept": "text/event-stream"},
        json={"content": SLOW},
        timeout=90,
    ) as response:
        async for name, data in aiter_json_events(response):
            if name == "turn":
                turn_id = data["turn_id"]
            elif name == "delta" and not outage:
                await asyncio.to_thread(client.stack.postgres.stop)
                await probe_routes()
                await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - started)))
                await asyncio.to_thread(client.stack.postgres.start)
            elif name in ("error", "done"):
                done[name] = data
    for path, answer in outage.items():
        if path == "ready":
            continue
        assert answer.status_code == 503, (path, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert int(answer.headers["retry-after"]) > 0
        assert answer.json()["code"] == "database_unavailable", (path, answer.text)
    ready = outage["ready"].json()
    assert outage["ready"].status_code == 503 and ready["checks"]["database"]["ok"] is False
    # The outcome was stored once the database was back (storing is retried), not left pending.
    assert "done" in done, done
    assert done.get("error", {}).get("code") != "storage_failed", done
    assert turn_id
    turn = await stored_turn(client, turn_id)
    assert turn["user"]["status"] == ("failed" if done["done"]["status"] == "failed" else "complete")
