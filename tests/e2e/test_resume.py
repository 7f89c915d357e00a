"""Resumable, multi-device streams on the real stack with two service replicas: a stream cut anywhere and
resumed on either replica joins to the stored reply, a second device follows a running turn, a stop from any
device ends every listener, and a turn whose replica died is followed to its end."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from devstack.sse import aiter_numbered_events
from devstack.stack import Stack
from tests.e2e.conftest import StackClient, User

pytestmark = pytest.mark.e2e

SLOW = "[[slow]] tell me a long story"  # 20 words, 100 ms apart
REPLICA_B_PORT = 18001


@pytest.fixture(scope="module")
def replica_b(stack: Stack) -> Iterator[str]:
    url = stack.start_replica("service-b", REPLICA_B_PORT)
    yield url
    stack.stop_replica("service-b")


async def stored_reply(client: StackClient, turn_id: str) -> str:
    reply: str = await client.wait_for(
        "select content from public.messages where turn_id = $1::uuid and role = 'assistant' and status <> 'pending'",
        turn_id,
        timeout=60,
    )
    return reply


async def read(
    response: httpx.Response, events: list[tuple[int, str, dict[str, Any]]], stop_after: int | None = None
) -> None:
    """Collect a stream's events into ``events``, until ``done`` or ``stop_after`` of them (to go on reading the
    same response later, or to hang up)."""
    reader = response.extensions.setdefault("test_reader", aiter_numbered_events(response))
    count = 0
    async for event in reader:
        events.append(event)
        count += 1
        if event[1] == "done" or (stop_after is not None and count >= stop_after):
            return


async def stream(
    http: httpx.AsyncClient, method: str, url: str, user: User, last_event_id: int | None = None, **kwargs: Any
) -> Any:
    headers = {**user.headers, "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return http.stream(method, url, headers=headers, timeout=60, **kwargs)


def texts(events: list[tuple[int, str, dict[str, Any]]]) -> str:
    return "".join(data["text"] for _, name, data in events if name == "delta")


async def test_a_stream_cut_anywhere_and_resumed_on_either_replica_joins_to_the_stored_reply(
    client: StackClient, replica_b: str
) -> None:
    rng = random.Random(20261130)
    replicas = [client.stack.config.service_url, replica_b]
    for _ in range(3):
        user = await client.sign_up("Rae")
        events: list[tuple[int, str, dict[str, Any]]] = []
        async with await stream(
            client.http, "POST", f"{replicas[0]}/api/v1/chat/message", user, json={"content": SLOW}
        ) as response:
            await read(response, events, stop_after=rng.randint(2, 6))
        turn_id = events[0][2]["turn_id"]
        cuts = 0
        while events[-1][1] != "done":
            replica = rng.choice(replicas)
            last = events[-1][0]
            cut_after = rng.randint(1, 5) if cuts < 3 else None
            async with await stream(
                client.http,
                "GET",
                f"{replica}/api/v1/chat/turns/{turn_id}/stream",
                user,
                last_event_id=last,
            ) as response:
                assert response.status_code == 200, await response.aread()
                await read(response, events, stop_after=cut_after)
            cuts += 1
        ids = [event_id for event_id, _, _ in events]
        assert ids == list(range(1, len(ids) + 1)), ids  # no gap, no duplicate
        assert events[-1][2]["status"] == "complete"
        assert texts(events) == await stored_reply(client, turn_id)


async def test_a_second_device_follows_a_running_turn_and_a_stop_from_it_ends_every_listener(
    client: StackClient, replica_b: str
) -> None:
    user = await client.sign_up("Sam")
    first: list[tuple[int, str, dict[str, Any]]] = []
    second: list[tuple[int, str, dict[str, Any]]] = []
    async with await stream(
        client.http, "POST", f"{client.stack.config.service_url}/api/v1/chat/message", user, json={"content": SLOW}
    ) as started:
        await read(started, first, stop_after=3)
        # The phone: no turn id, another replica, from the beginning.
        async with await stream(client.http, "GET", f"{replica_b}/api/v1/chat/turns/current/stream", user) as follow:
            assert follow.status_code == 200 and follow.headers["x-turn-id"] == first[0][2]["turn_id"]
            await read(follow, second, stop_after=5)
            stop = await client.http.post(f"{replica_b}/api/v1/chat/cancel", headers=user.headers)
            assert stop.status_code == 202
            await read(follow, second)
        await read(started, first)
    for events in (first, second):
        assert events[-1][1] == "done" and events[-1][2]["status"] == "cancelled", events[-3:]
    assert [e[0] for e in second] == list(range(1, len(second) + 1))
    assert texts(second) == texts(first)
    # Nothing runs now.
    nothing = await client.http.get(f"{replica_b}/api/v1/chat/turns/current/stream", headers=user.headers)
    assert nothing.status_code == 204


async def test_a_websocket_attaches_with_the_last_id_it_saw(client: StackClient, replica_b: str) -> None:
    user = await client.sign_up("Ted")
    events: list[tuple[int, str, dict[str, Any]]] = []
    async with await stream(
        client.http, "POST", f"{client.stack.config.service_url}/api/v1/chat/message", user, json={"content": SLOW}
    ) as response:
        await read(response, events, stop_after=4)
    turn_id = events[0][2]["turn_id"]
    url = replica_b.replace("http://", "ws://") + "/api/v1/chat/stream"
    async with websockets.connect(url) as socket:
        await socket.send(json.dumps({"type": "auth", "token": user.token}))
        assert json.loads(await socket.recv())["type"] == "ready"
        await socket.send(json.dumps({"type": "attach", "turn_id": turn_id, "last_event_id": events[-1][0]}))
        while events[-1][1] != "done":
            frame = json.loads(await asyncio.wait_for(socket.recv(), 30))
            assert frame["type"] != "error", frame
            events.append((frame.pop("id"), frame.pop("type"), frame))
    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    assert texts(events) == await stored_reply(client, turn_id)


async def test_resuming_finished_unknown_foreign_and_expired_turns(client: StackClient, replica_b: str) -> None:
    user, stranger = await client.sign_up("Uma"), await client.sign_up("Vic")
    done = await client.chat_stream(user, "hello")
    turn_id = done[0][1]["turn_id"]
    # Finished: the whole turn again, to its done, from any replica (the query parameter works too).
    async with await stream(
        client.http, "GET", f"{replica_b}/api/v1/chat/turns/{turn_id}/stream?last_event_id=0", user
    ) as response:
        replayed: list[tuple[int, str, dict[str, Any]]] = []
        await read(response, replayed)
    assert [(name, data) for _, name, data in replayed] == done
    for who, turn in ((user, str(uuid.uuid4())), (stranger, turn_id)):
        missing = await client.http.get(f"{replica_b}/api/v1/chat/turns/{turn}/stream", headers=who.headers)
        assert missing.status_code == 404 and missing.json()["code"] == "no_such_turn"
    await client.db.execute("delete from private.turn_events where turn_id = $1::uuid", turn_id)
    expired = await client.http.get(f"{replica_b}/api/v1/chat/turns/{turn_id}/stream", headers=user.headers)
    assert expired.status_code == 410 and expired.json()["code"] == "turn_expired"


async def test_a_client_whose_replica_died_gets_the_whole_reply_from_the_other(
    client: StackClient, replica_b: str
) -> None:
    user = await client.sign_up("Wes")
    events: list[tuple[int, str, dict[str, Any]]] = []
    async with await stream(
        client.http, "POST", f"{client.stack.config.service_url}/api/v1/chat/message", user, json={"content": SLOW}
    ) as response:
        await read(response, events, stop_after=4)
        await asyncio.sleep(0.5)  # the journal's next batch is written
        client.stack.kill_service()
    turn_id = events[0][2]["turn_id"]
    killed = time.monotonic()
    try:
        async with await stream(
            client.http,
            "GET",
            f"{replica_b}/api/v1/chat/turns/{turn_id}/stream",
            user,
            last_event_id=events[-1][0],
        ) as response:
            await read(response, events)
    finally:
        await asyncio.to_thread(client.stack.start_service)
    assert events[-1][1] == "done" and events[-1][2]["status"] == "complete", events[-3:]
    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    assert texts(events) == await stored_reply(client, turn_id)
    assert time.monotonic() - killed < 30 + 2 + 10  # the lease, the recovery's grace and a pass or two
