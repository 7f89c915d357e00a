"""Issue: chat. Streaming over SSE and WebSocket on the real stack; every message stored with tokens
and cost; memory that Letta keeps across sessions; disconnects, concurrency, budget, history paging."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
import websockets

from devstack.sse import aiter_json_events
from tests.e2e.conftest import StackClient, User

pytestmark = pytest.mark.e2e


async def stored_turn(client: StackClient, turn_id: str) -> dict[str, dict]:
    rows = await client.db.fetch(
        "select m.*, e.detail as error from public.messages m "
        "left join private.message_errors e on e.message_id = m.id where m.turn_id = $1::uuid",
        turn_id,
    )
    return {row["role"]: dict(row) for row in rows}


async def test_streamed_deltas_join_to_the_stored_reply_with_letta_usage_and_cost(client: StackClient) -> None:
    user = await client.sign_up("Fay")
    events = await client.chat_stream(user, "Tell me something")
    names = [name for name, _ in events]
    assert names[0] == "turn" and names[-1] == "done"
    assert "delta" in names and "usage" in names and "error" not in names
    deltas = "".join(data["text"] for name, data in events if name == "delta")
    done = events[-1][1]
    assert done["status"] == "complete"
    stored = await stored_turn(client, done["turn_id"])
    assert stored["assistant"]["content"] == deltas
    assert str(stored["assistant"]["id"]) == done["message_id"]
    assert stored["user"]["content"] == "Tell me something" and stored["user"]["status"] == "complete"
    usage = [data for name, data in events if name == "usage"][-1]
    assert stored["assistant"]["prompt_tokens"] == usage["prompt_tokens"] == done["prompt_tokens"] > 0
    assert stored["assistant"]["completion_tokens"] == usage["completion_tokens"] > 0
    # Letta's own record of the run agrees with what we stored.
    run_usage = await client.letta("GET", f"/v1/runs/{done['run_id']}/usage")
    assert run_usage["prompt_tokens"] == stored["assistant"]["prompt_tokens"]
    assert run_usage["completion_tokens"] == stored["assistant"]["completion_tokens"]
    # Cost = tokens x LiteLLM's prices for the model.
    models = (await client.litellm("GET", "/model/info"))["data"]
    price = next(m["model_info"] for m in models if m["model_name"] == stored["assistant"]["model"])
    expected = (
        Decimal(str(price["input_cost_per_token"])) * usage["prompt_tokens"]
        + Decimal(str(price["output_cost_per_token"])) * usage["completion_tokens"]
    )
    assert stored["assistant"]["cost"] == expected.quantize(Decimal("1e-8"))
    # The thread's title was written on the user's key after the reply: the day counts that call too.
    title_call = await client.titled(user)
    day = await client.db.fetchrow("select * from public.usage_metrics where user_id = $1", user.id)
    assert day["total_messages"] == 2
    assert day["total_tokens"] == usage["total_tokens"] + title_call["total_tokens"]
    assert day["total_cost"] == stored["assistant"]["cost"] + title_call["cost"]


async def test_json_reply_without_event_stream(client: StackClient) -> None:
    user = await client.sign_up("Gus")
    response = await client.chat(user, "Hi")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "complete" and body["content"] and body["total_tokens"] > 0
    stored = await stored_turn(client, body["turn_id"])
    assert stored["assistant"]["content"] == body["content"]


async def test_memory_survives_sessions_because_letta_kept_it(client: StackClient) -> None:
    user = await client.sign_up("Hal")
    events = await client.chat_stream(user, "Please remember that my cat is called Miso")
    assert any(name == "tool" and data.get("name") == "memory_insert" for name, data in events), events
    # A new connection, a new session: the answer comes from the agent's memory block.
    agent_id = (await client.profile(user.id))["letta_agent_id"]
    block = await client.letta("GET", f"/v1/agents/{agent_id}/core-memory/blocks/human")
    assert "Miso" in block["value"]
    response = await client.chat(user, "What is my cat called?")
    assert response.status_code == 200
    assert "Miso" in response.json()["content"]


async def test_client_disconnect_mid_stream_still_stores_the_reply(client: StackClient) -> None:
    user = await client.sign_up("Ida")
    turn_id = None
    async with client.http.stream(
        "POST",
        f"{client.stack.config.service_url}/api/v1/chat/message",
        headers={**user.headers, "Accept": "text/event-stream"},
        json={"content": "[[slow]] tell a long story"},
    ) as response:
        async for name, data in aiter_json_events(response):
            if name == "turn":
                turn_id = data["turn_id"]
            if name == "delta":
                break  # hang up after the first token
    assert turn_id
    await client.wait_for(
        "select status = 'complete' from public.messages where turn_id = $1::uuid and role = 'assistant'",
        turn_id,
        timeout=60,
    )
    stored = await stored_turn(client, turn_id)
    assert len(stored["assistant"]["content"].split()) >= 10
    assert stored["user"]["status"] == "complete"


async def test_second_concurrent_message_gets_409(client: StackClient) -> None:
    user = await client.sign_up("Jo")
    first = asyncio.create_task(client.chat(user, "[[slow]] take your time"))
    await client.wait_for("select exists(select 1 from private.chat_turn_leases where user_id = $1)", user.id)
    second = await client.chat(user, "me too")
    assert second.status_code == 409, second.text
    assert second.json()["title"] == "Turn In Progress"
    assert (await first).status_code == 200
    # The lease is gone once the turn is stored: the next message goes through.
    assert (await client.chat(user, "now?")).status_code == 200


async def test_exhausted_budget_gets_402_before_letta_is_called(client: StackClient) -> None:
    user = await client.sign_up("Kim")
    await client.litellm("POST", "/_double/spend", json={"user_id": str(user.id), "spend": 10.5})
    before = len(await client.upstream_requests())
    response = await client.chat(user, "hello?")
    assert response.status_code == 402, response.text
    problem = response.json()
    assert problem["spend"] == 10.5 and problem["max_budget"] == 10.0
    assert len(await client.upstream_requests()) == before
    # Nothing was stored for a refused turn.
    assert not await client.db.fetchval("select count(*) from public.messages where user_id = $1", user.id)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        # What LiteLLM 1.106.2 answers (auth_checks: ExceededBudget, HTTP 422) ...
        (422, "ExceededBudget: User={user} over budget. Spend=10.2, Budget=10.0"),
        # ... and the wording other LiteLLM paths use.
        (400, "Budget has been exceeded! Current cost: 10.2, Max budget: 10.0"),
    ],
)
async def test_budget_rejected_mid_turn_is_an_error_event(client: StackClient, status: int, message: str) -> None:
    user = await client.sign_up("Lu")
    # LiteLLM rejects the agent's LLM call itself (the pre-check saw budget left).
    await client.litellm(
        "POST",
        "/_double/faults",
        json={
            "route": "/v1/chat/completions",
            "count": 1,
            "status_code": status,
            "user_id": str(user.id),
            "error": {
                "message": message.format(user=user.id),
                "type": "budget_exceeded",
                "param": None,
                "code": str(status),
            },
        },
    )
    events = await client.chat_stream(user, "hello")
    errors = [data for name, data in events if name == "error"]
    assert errors and errors[0]["code"] == "budget_exceeded", events
    assert "letta" not in errors[0]["message"]  # a sentence for the user, not the upstream's text
    done = events[-1][1]
    assert done["status"] == "failed"
    stored = await stored_turn(client, done["turn_id"])
    assert stored["user"]["status"] == "failed"
    assert "budget" in stored["user"]["error"].lower()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"content": ""}, 422),
        ({"content": "   \n\t "}, 422),
        ({"content": "x" * (16 * 1024 + 1)}, 413),
        ({"content": "hi", "model": "gpt-4"}, 400),
        ({"text": "hi"}, 400),
    ],
)
async def test_bad_input_is_refused_with_problem_details(client: StackClient, body: dict, status: int) -> None:
    user = await client.sign_up("Max")
    response = await client.http.post(
        f"{client.stack.config.service_url}/api/v1/chat/message", headers=user.headers, json=body
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_malformed_json_is_400(client: StackClient) -> None:
    user = await client.sign_up("Ned")
    response = await client.http.post(
        f"{client.stack.config.service_url}/api/v1/chat/message",
        headers={**user.headers, "content-type": "application/json"},
        content=b"{oops",
    )
    assert response.status_code == 400
    assert response.json()["status"] == 400


async def ws_connect(client: StackClient, user: User):  # type: ignore[no-untyped-def]
    url = client.stack.config.service_url.replace("http://", "ws://") + "/api/v1/chat/stream"
    socket = await websockets.connect(url)
    await socket.send(json.dumps({"type": "auth", "token": user.token}))
    ready = json.loads(await socket.recv())
    assert ready == {"type": "ready", "user_id": str(user.id)}
    return socket


async def ws_turn(socket, content: str) -> list[dict]:  # type: ignore[no-untyped-def]
    await socket.send(json.dumps({"type": "message", "content": content}))
    events = []
    while True:
        event = json.loads(await asyncio.wait_for(socket.recv(), 60))
        events.append(event)
        if event["type"] == "done" or (
            event["type"] == "error" and event.get("status", 0) < 500 and event["code"] != "budget_exceeded"
        ):
            return events


async def test_websocket_multi_turn_ping_and_cancel(client: StackClient) -> None:
    user = await client.sign_up("Ola")
    socket = await ws_connect(client, user)
    try:
        await socket.send(json.dumps({"type": "ping"}))
        assert json.loads(await socket.recv()) == {"type": "pong"}
        for content in ("first message", "second message"):
            events = await ws_turn(socket, content)
            assert events[0]["type"] == "turn" and events[-1]["type"] == "done"
            assert events[-1]["status"] == "complete"
            text = "".join(e["text"] for e in events if e["type"] == "delta")
            assert (await stored_turn(client, events[0]["turn_id"]))["assistant"]["content"] == text
        # Cancel a slow turn after its first token.
        await socket.send(json.dumps({"type": "message", "content": "[[slow]] a long one"}))
        events = []
        while True:
            event = json.loads(await asyncio.wait_for(socket.recv(), 60))
            events.append(event)
            if event["type"] == "delta" and sum(e["type"] == "delta" for e in events) == 2:
                await socket.send(json.dumps({"type": "cancel"}))
            if event["type"] == "done":
                break
        assert events[-1]["status"] == "cancelled"
        stored = await stored_turn(client, events[0]["turn_id"])
        assert stored["assistant"]["status"] == "cancelled"
        assert len(stored["assistant"]["content"].split()) < 20
        # The connection still works after a cancel.
        events = await ws_turn(socket, "still there?")
        assert events[-1]["status"] == "complete"
    finally:
        await socket.close()


async def test_websocket_refuses_a_bad_token(client: StackClient) -> None:
    url = client.stack.config.service_url.replace("http://", "ws://") + "/api/v1/chat/stream"
    async with websockets.connect(url) as socket:
        await socket.send(json.dumps({"type": "auth", "token": "not-a-token"}))
        error = json.loads(await socket.recv())
        assert error["type"] == "error" and error["code"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
        assert closed.value.rcvd.code == 4401


async def test_history_pages_have_no_gaps_or_duplicates_while_messages_arrive(client: StackClient) -> None:
    user = await client.sign_up("Pia")
    for i in range(4):
        assert (await client.chat(user, f"message {i}")).status_code == 200
    url = f"{client.stack.config.service_url}/api/v1/chat/history"
    seen: list[str] = []
    cursor = None
    writer = None
    while True:
        params = {"limit": 3} | ({"before": cursor} if cursor else {})
        page = (await client.http.get(url, headers=user.headers, params=params)).json()
        seen.extend(m["id"] for m in page["messages"])
        if writer is None:  # new messages arrive while we page backwards
            writer = asyncio.create_task(client.chat(user, "arriving meanwhile"))
        cursor = page["next_cursor"]
        if not cursor:
            break
    await writer
    assert len(seen) == len(set(seen)) == 8
    rows = await client.db.fetch(
        "select id::text from public.messages where user_id = $1 order by created_at desc, id desc", user.id
    )
    older = [r["id"] for r in rows][-8:]
    assert seen == older


async def test_history_is_own_messages_only_and_limit_is_bounded(client: StackClient) -> None:
    a = await client.sign_up("Quin")
    b = await client.sign_up("Rae")
    assert (await client.chat(a, "from a")).status_code == 200
    url = f"{client.stack.config.service_url}/api/v1/chat/history"
    page_b = (await client.http.get(url, headers=b.headers)).json()
    assert page_b["messages"] == []
    assert (await client.http.get(url, headers=a.headers, params={"limit": 101})).status_code == 400
    assert (await client.http.get(url, headers=a.headers, params={"before": "garbage!"})).status_code == 400


async def test_cancel_endpoint_stops_a_streaming_turn(client: StackClient) -> None:
    user = await client.sign_up("Rex")
    base = client.stack.config.service_url
    assert (await client.http.post(f"{base}/api/v1/chat/cancel", headers=user.headers)).status_code == 404
    events = []
    async with client.http.stream(
        "POST",
        f"{base}/api/v1/chat/message",
        headers={**user.headers, "Accept": "text/event-stream"},
        json={"content": "[[slow]] a long story"},
        timeout=60,
    ) as response:
        async for name, data in aiter_json_events(response):
            events.append((name, data))
            if name == "delta" and sum(n == "delta" for n, _ in events) == 2:
                cancelled = await client.http.post(f"{base}/api/v1/chat/cancel", headers=user.headers)
                assert cancelled.status_code == 202 and cancelled.json() == {"cancelled": True}
    done = events[-1]
    assert done[0] == "done" and done[1]["status"] == "cancelled"
    stored = await stored_turn(client, done[1]["turn_id"])
    assert stored["assistant"]["status"] == "cancelled"
    assert stored["assistant"]["content"] == "".join(d["text"] for n, d in events if n == "delta")
