"""Threads on the real stack: many conversations on one agent that share its memory (Letta conversations,
recompiled before each turn), the thread routes, one turn at a time across threads, titles on the user's key."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
import websockets

from devstack.sse import aiter_json_events
from tests.e2e.conftest import StackClient, User

pytestmark = pytest.mark.e2e

SLOW = "[[slow]] tell me a long story"  # 20 words, 100 ms apart


def url(client: StackClient, path: str) -> str:
    return f"{client.stack.config.service_url}{path}"


async def new_thread(client: StackClient, user: User, title: str | None = None) -> dict[str, Any]:
    response = await client.http.post(url(client, "/api/v1/threads"), headers=user.headers, json={"title": title})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def say(client: StackClient, user: User, content: str, thread_id: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"content": content}
    if thread_id is not None:
        body["thread_id"] = str(thread_id)
    response = await client.http.post(url(client, "/api/v1/chat/message"), headers=user.headers, json=body, timeout=120)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def history(client: StackClient, user: User, thread_id: Any = None, **params: Any) -> httpx.Response:
    if thread_id is not None:
        params["thread_id"] = str(thread_id)
    return await client.http.get(url(client, "/api/v1/chat/history"), headers=user.headers, params=params)


async def test_a_fact_stored_in_one_thread_is_known_in_every_thread_old_or_new(client: StackClient) -> None:
    user = await client.sign_up("Theo")
    before = await new_thread(client, user)  # exists before the fact, and has talked already
    assert (await say(client, user, "Hello there", before["id"]))["content"] == "You said: Hello there"
    teller = await new_thread(client, user)
    told = await say(client, user, "remember that my cat is Miso", teller["id"])
    assert told["thread_id"] == teller["id"] and told["status"] == "complete"

    # Every thread answers from the memory as it is now: the old one, the one that stored it (Letta compiles a
    # conversation's memory once: without our recompile both answered "I don't know that yet"), a new one and the
    # default thread (no thread_id).
    for thread_id in (before["id"], teller["id"], (await new_thread(client, user))["id"], None):
        answer = await say(client, user, "What is my cat called?", thread_id)
        assert "Miso" in answer["content"], (thread_id, answer["content"])

    # Each thread is its own Letta conversation on the user's one agent; the default thread is the agent's own.
    agent_id = (await client.profile(user.id))["letta_agent_id"]
    rows = await client.db.fetch(
        "select id, is_default, letta_agent_id, letta_conversation_id from public.threads where user_id = $1", user.id
    )
    conversations = {row["letta_conversation_id"] for row in rows if not row["is_default"]}
    assert len(conversations) == 3 and None not in conversations
    assert all(row["letta_agent_id"] == agent_id for row in rows if not row["is_default"])
    listed = await client.letta("GET", "/v1/conversations/", params={"agent_id": agent_id, "limit": 50})
    assert conversations <= {c["id"] for c in listed}

    # History per thread, and everything together.
    page = (await history(client, user, before["id"])).json()
    assert [m["content"] for m in reversed(page["messages"])] == [
        "Hello there",
        "You said: Hello there",
        "What is my cat called?",
        page["messages"][0]["content"],
    ]
    assert {m["thread_id"] for m in page["messages"]} == {before["id"]}
    everything = (await history(client, user, limit=100)).json()["messages"]
    assert len(everything) == 2 * 6


async def test_thread_routes_list_rename_title_and_isolation(client: StackClient) -> None:
    user = await client.sign_up("Uma")
    other = await client.sign_up("Vic")
    first = await new_thread(client, user)
    second = await new_thread(client, user, "Named by me")
    assert second["title"] == "Named by me" and second["title_source"] == "user"
    await say(client, user, "remember that my favourite city is Lisbon", first["id"])

    # Titled after the first reply, on the user's own key: a recorded, billed LLM call.
    call = await client.titled(user, uuid.UUID(first["id"]))
    thread = (await client.http.get(url(client, f"/api/v1/threads/{first['id']}"), headers=user.headers)).json()
    assert thread["title"] == "Remember That My Favourite City" and thread["title_source"] == "generated"
    assert call["total_tokens"] > 0 and call["cost"] > 0
    request_id = await client.db.fetchval("select request_id from public.llm_calls where user_id = $1", user.id)
    key = await client.db.fetchval("select litellm_key from private.litellm_keys where user_id = $1", user.id)
    # LiteLLM writes spend records in batches; the reconciler settles the call once its record is there.
    await client.wait_for("select cost_final from public.llm_calls where request_id = $1", request_id)
    charged = await client.litellm("GET", "/spend/logs", params={"api_key": key, "summarize": "false"})
    assert request_id in {log["request_id"] for log in charged}

    # A title that cannot be generated falls back to the first message; a user's title is never replaced.
    fallback = await new_thread(client, user)
    await say(client, user, "hi [[untitled]] there", fallback["id"])
    await client.titled(user, uuid.UUID(fallback["id"]))
    row = await client.db.fetchrow("select title, title_source from public.threads where id = $1", fallback["id"])
    assert (row["title"], row["title_source"]) == ("hi [[untitled]] there", "first_message")
    await say(client, user, "Hello", second["id"])
    await asyncio.sleep(1)
    assert (await client.db.fetchval("select title from public.threads where id = $1", second["id"])) == "Named by me"

    # The list: most recent activity first, keyset pages.
    page = (await client.http.get(url(client, "/api/v1/threads"), headers=user.headers, params={"limit": 2})).json()
    assert [t["id"] for t in page["threads"]] == [second["id"], fallback["id"]]
    rest = (
        await client.http.get(
            url(client, "/api/v1/threads"), headers=user.headers, params={"limit": 2, "before": page["next_cursor"]}
        )
    ).json()
    assert rest["threads"][0]["id"] == first["id"] and len(rest["threads"]) == 2  # + the default one
    assert rest["next_cursor"] is None

    renamed = await client.http.patch(
        url(client, f"/api/v1/threads/{first['id']}"), headers=user.headers, json={"title": "Cities"}
    )
    assert renamed.status_code == 200 and renamed.json()["title_source"] == "user"
    bad = await client.http.patch(
        url(client, f"/api/v1/threads/{first['id']}"), headers=user.headers, json={"title": ""}
    )
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")

    # Another user's thread does not exist for them: every route says 404, and nothing changes.
    thread_url = url(client, f"/api/v1/threads/{first['id']}")
    refused = [
        await client.http.get(thread_url, headers=other.headers),
        await client.http.patch(thread_url, headers=other.headers, json={"title": "mine"}),
        await client.http.delete(thread_url, headers=other.headers),
        await client.http.post(f"{thread_url}/fork", headers=other.headers, json={"message_id": str(uuid.uuid4())}),
        await client.http.post(
            url(client, "/api/v1/chat/message"), headers=other.headers, json={"content": "hi", "thread_id": first["id"]}
        ),
        await history(client, other, first["id"]),
    ]
    assert [r.status_code for r in refused] == [404] * 6, [r.text for r in refused]
    assert all(r.json()["code"] == "no_such_thread" for r in refused[:3])
    assert (await client.http.get(url(client, "/api/v1/threads"), headers=other.headers)).json()["threads"][0][
        "is_default"
    ]
    # Without a token: 401 everywhere.
    for method, path in (
        ("GET", "/api/v1/threads"),
        ("POST", "/api/v1/threads"),
        ("DELETE", f"/api/v1/threads/{first['id']}"),
    ):
        assert (await client.http.request(method, url(client, path))).status_code == 401
    assert (await client.db.fetchval("select title from public.threads where id = $1", first["id"])) == "Cities"


async def test_one_turn_at_a_time_across_threads_names_the_running_thread(client: StackClient) -> None:
    user = await client.sign_up("Wes")
    busy, idle = await new_thread(client, user), await new_thread(client, user)
    async with client.http.stream(
        "POST",
        url(client, "/api/v1/chat/message"),
        headers={**user.headers, "Accept": "text/event-stream"},
        json={"content": SLOW, "thread_id": busy["id"]},
        timeout=120,
    ) as stream:
        events = aiter_json_events(stream)
        name, data = await anext(events)
        assert name == "turn" and data["thread_id"] == busy["id"]
        refused = await client.http.post(
            url(client, "/api/v1/chat/message"), headers=user.headers, json={"content": "hi", "thread_id": idle["id"]}
        )
        assert refused.status_code == 409 and refused.json()["code"] == "turn_in_progress"
        assert refused.json()["thread_id"] == busy["id"]
        # Following "my running turn" by thread: nothing runs in the idle one; the busy one streams.
        current = url(client, "/api/v1/chat/turns/current/stream")
        assert (
            await client.http.get(current, headers=user.headers, params={"thread_id": idle["id"]})
        ).status_code == 204
        # A thread with a turn running cannot be deleted.
        deleting = await client.http.delete(url(client, f"/api/v1/threads/{busy['id']}"), headers=user.headers)
        assert deleting.status_code == 409 and deleting.json()["code"] == "thread_busy"
        async for name, data in events:
            if name == "done":
                assert data["status"] == "complete"


async def test_delete_removes_the_history_and_the_letta_conversation_but_not_the_memory(client: StackClient) -> None:
    user = await client.sign_up("Xia")
    doomed = await new_thread(client, user)
    await say(client, user, "remember that my bike is green", doomed["id"])
    found = await client.http.get(url(client, "/api/v1/chat/search"), headers=user.headers, params={"q": "bike"})
    assert {hit["thread_id"] for hit in found.json()["results"]} == {doomed["id"]}
    conversation = await client.db.fetchval(
        "select letta_conversation_id from public.threads where id = $1", doomed["id"]
    )
    gone = await client.http.delete(url(client, f"/api/v1/threads/{doomed['id']}"), headers=user.headers)
    assert gone.status_code == 204
    assert await client.db.fetchval("select count(*) from public.messages where thread_id = $1", doomed["id"]) == 0
    assert (await history(client, user, doomed["id"])).status_code == 404
    found = await client.http.get(url(client, "/api/v1/chat/search"), headers=user.headers, params={"q": "bike"})
    assert found.status_code == 200 and found.json()["results"] == []
    with pytest.raises(httpx.HTTPStatusError) as missing:
        await client.letta("GET", f"/v1/conversations/{conversation}")
    assert missing.value.response.status_code == 404
    # The memory it wrote stays with the agent.
    assert "green" in (await say(client, user, "What colour is my bike?"))["content"]

    # The default thread is emptied (and its Letta history cleared), and stays the default.
    default_id = await client.db.fetchval("select id from public.threads where user_id = $1 and is_default", user.id)
    emptied = await client.http.delete(url(client, f"/api/v1/threads/{default_id}"), headers=user.headers)
    assert emptied.status_code == 204
    assert (await history(client, user, default_id)).json()["messages"] == []
    assert (await say(client, user, "Hello again"))["thread_id"] == str(default_id)


async def test_fork_starts_with_the_history_up_to_a_message(client: StackClient) -> None:
    user = await client.sign_up("Yan")
    source = await new_thread(client, user, "Plans")
    first = await say(client, user, "Hello one", source["id"])
    await say(client, user, "Hello two", source["id"])
    # At the newest message: Letta forks the whole conversation.
    newest = (await history(client, user, source["id"], limit=1)).json()["messages"][0]
    whole = await client.http.post(
        url(client, f"/api/v1/threads/{source['id']}/fork"), headers=user.headers, json={"message_id": newest["id"]}
    )
    assert whole.status_code == 201, whole.text
    branch = whole.json()
    assert branch["forked_from_thread_id"] == source["id"] and branch["title"] == "Plans"
    copied = (await history(client, user, branch["id"])).json()["messages"]
    assert [m["content"] for m in reversed(copied)] == [
        "Hello one",
        "You said: Hello one",
        "Hello two",
        "You said: Hello two",
    ]
    assert all(m["cost"] is None for m in copied)  # the cost stays with the original turns
    assert await client.db.fetchval(
        "select letta_conversation_id is not null and branch_context is null from public.threads where id = $1",
        branch["id"],
    )

    # Earlier: the branch has the history up to that message, and its first turn gives the agent that transcript.
    early = await client.http.post(
        url(client, f"/api/v1/threads/{source['id']}/fork"),
        headers=user.headers,
        json={"message_id": first["message_id"], "title": "Other plans"},
    )
    assert early.status_code == 201, early.text
    early_branch = early.json()
    assert [m["content"] for m in reversed((await history(client, user, early_branch["id"])).json()["messages"])] == [
        "Hello one",
        "You said: Hello one",
    ]
    before = len(await client.upstream_requests())
    reply = await say(client, user, "Hello three", early_branch["id"])
    assert reply["content"] == "You said: Hello three"
    sent = [str(r) for r in (await client.upstream_requests())[before:]]
    assert any("You said: Hello one" in r for r in sent) and not any("Hello two" in r for r in sent)
    assert await client.db.fetchval(
        "select branch_context is null from public.threads where id = $1", early_branch["id"]
    )

    # The branch point must be a message of that thread.
    stray = await client.http.post(
        url(client, f"/api/v1/threads/{early_branch['id']}/fork"),
        headers=user.headers,
        json={"message_id": newest["id"]},
    )
    assert stray.status_code == 404 and stray.json()["code"] == "no_such_message"


async def test_websocket_and_ai_sdk_chat_in_a_thread(client: StackClient) -> None:
    user = await client.sign_up("Zoe")
    thread = await new_thread(client, user)
    ws_url = client.stack.config.service_url.replace("http://", "ws://") + "/api/v1/chat/stream"
    async with websockets.connect(ws_url) as socket:
        await socket.send(json.dumps({"type": "auth", "token": user.token}))
        assert json.loads(await socket.recv())["type"] == "ready"
        await socket.send(json.dumps({"type": "message", "content": "Hello socket", "thread_id": thread["id"]}))
        frames = []
        while not frames or frames[-1]["type"] != "done":
            frames.append(json.loads(await asyncio.wait_for(socket.recv(), 30)))
        assert frames[0]["type"] == "turn" and frames[0]["thread_id"] == thread["id"]
        await socket.send(json.dumps({"type": "message", "content": "hi", "thread_id": str(uuid.uuid4())}))
        refused = json.loads(await asyncio.wait_for(socket.recv(), 30))
        assert (refused["type"], refused["code"], refused["status"]) == ("error", "no_such_thread", 404)

    # useChat with the thread's id as its chat id talks in that thread; its own ids go to the default thread.
    body = {"messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hello ui"}]}]}
    for chat_id, expected in ((thread["id"], thread["id"]), ("chat-abc", None)):
        async with client.http.stream(
            "POST", url(client, "/api/v1/chat/ui"), headers=user.headers, json={**body, "id": chat_id}, timeout=60
        ) as response:
            assert response.status_code == 200
            await response.aread()
        row = await client.db.fetchrow(
            "select m.thread_id, t.is_default from public.messages m join public.threads t on t.id = m.thread_id "
            "where m.user_id = $1 and m.content = 'Hello ui' order by m.created_at desc limit 1",
            user.id,
        )
        assert (str(row["thread_id"]) == expected) if expected else row["is_default"]
