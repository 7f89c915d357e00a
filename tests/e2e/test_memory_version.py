"""A thread's Letta conversation is recompiled before a turn only when the agent's memory may have changed since the
conversation was compiled (issue 14): a memory version bumped by turns that call a memory tool, by turns recovered from
Letta's record and by PATCH /api/v1/agent/memory, against the version each thread's conversation was compiled at.

On the real stack: the scripted model answers a question only from the memory rendered in the conversation's system
message (so a stale conversation answers "I don't know that yet"), and the service's own metrics count its recompile
calls to Letta (the e2e tests run one at a time against one service process)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import StackClient
from tests.e2e.test_durable_turns import start_turn_then
from tests.e2e.test_metrics import scrape, value
from tests.e2e.test_threads import new_thread, say, url

pytestmark = pytest.mark.e2e

RECOMPILE = {"service": "letta", "method": "POST", "route": "/v1/conversations/{id}/recompile"}
QUESTION = "What is my cat called?"


async def recompiles(client: StackClient) -> float:
    """How many conversation recompiles the service process has asked Letta for."""
    _, scraped = await scrape(client)
    return value(scraped, "aichat_upstream_request_duration_seconds_count", **RECOMPILE)


async def versions(client: StackClient, thread: dict[str, Any]) -> tuple[int, int | None]:
    """(the agent's memory version, the version the thread's conversation was compiled at)."""
    row = await client.db.fetchrow(
        "select p.memory_version, t.compiled_memory_version from public.threads t "
        "join public.user_profiles p on p.id = t.user_id where t.id = $1",
        uuid.UUID(thread["id"]),
    )
    return row["memory_version"], row["compiled_memory_version"]


async def test_a_thread_is_recompiled_only_after_the_memory_changed(client: StackClient) -> None:
    user = await client.sign_up("Nia")
    old = await new_thread(client, user)
    assert (await say(client, user, "Hello there", old["id"]))["content"] == "You said: Hello there"
    start = await recompiles(client)

    # Nothing changed the memory since its conversation was opened: no recompile.
    assert (await say(client, user, "Hello again", old["id"]))["content"] == "You said: Hello again"
    assert await recompiles(client) == start
    assert await versions(client, old) == (0, 0)

    # A memory tool in another thread (a conversation opened for that turn: compiled as it is opened).
    teller = await new_thread(client, user)
    told = await say(client, user, "remember that my cat is Miso", teller["id"])
    assert told["status"] == "complete"
    assert await recompiles(client) == start
    assert await versions(client, old) == (1, 0)
    assert await versions(client, teller) == (1, 0)  # its own edit is not in its conversation either

    # The thread made before the fact and the thread that stored it are each recompiled once, and answer from it...
    for thread in (old, teller):
        answer = await say(client, user, QUESTION, thread["id"])
        assert "Miso" in answer["content"], (thread["id"], answer["content"])
    assert await recompiles(client) == start + 2
    assert await versions(client, old) == await versions(client, teller) == (1, 1)

    # ... and not again while nothing changes it; a thread opened now and the default thread need none.
    for thread_id in (old["id"], teller["id"], (await new_thread(client, user))["id"], None):
        answer = await say(client, user, QUESTION, thread_id)
        assert "Miso" in answer["content"], (thread_id, answer["content"])
    assert await recompiles(client) == start + 2


async def test_a_memory_edit_through_the_api_reaches_a_thread_at_its_next_turn(client: StackClient) -> None:
    user = await client.sign_up("Oli")
    thread = await new_thread(client, user)
    assert "don't know" in (await say(client, user, "What is my dog called?", thread["id"]))["content"]
    start = await recompiles(client)

    patched = await client.http.patch(
        url(client, "/api/v1/agent/memory"), headers=user.headers, json={"human": "User's name: Oli. Has a dog, Rex."}
    )
    assert patched.status_code == 200, patched.text
    # Bumped before Letta has the edit and again after it.
    assert await versions(client, thread) == (2, 0)

    answer = await say(client, user, "What is my dog called?", thread["id"])
    assert "Rex" in answer["content"], answer["content"]
    assert await recompiles(client) == start + 1
    assert await versions(client, thread) == (2, 2)

    # A conversation compiled at a version not known (a thread older than the memory versions) is recompiled once.
    await client.db.execute(
        "update public.threads set compiled_memory_version = null where id = $1::uuid", thread["id"]
    )
    for _ in range(2):
        assert "Rex" in (await say(client, user, "What is my dog called?", thread["id"]))["content"]
    assert await recompiles(client) == start + 2
    assert await versions(client, thread) == (2, 2)


async def test_a_branch_is_compiled_by_its_fork_and_needs_no_recompile(client: StackClient) -> None:
    user = await client.sign_up("Pat")
    source = await new_thread(client, user)
    await say(client, user, "remember that my bike is green", source["id"])
    newest = await client.db.fetchval(
        "select id from public.messages where thread_id = $1 order by created_at desc, id desc limit 1",
        uuid.UUID(source["id"]),
    )
    forked = await client.http.post(
        url(client, f"/api/v1/threads/{source['id']}/fork"), headers=user.headers, json={"message_id": str(newest)}
    )
    assert forked.status_code == 201, forked.text
    branch = forked.json()
    assert await versions(client, branch) == (1, 1)  # Letta compiles a fork's system message from the memory now

    start = await recompiles(client)
    assert "green" in (await say(client, user, "What colour is my bike?", branch["id"]))["content"]
    assert await recompiles(client) == start
    # The source stored the fact in its own conversation, compiled before it: it is recompiled.
    assert "green" in (await say(client, user, "What colour is my bike?", source["id"]))["content"]
    assert await recompiles(client) == start + 1


async def test_a_memory_edit_recovered_after_its_replica_died_reaches_every_thread(client: StackClient) -> None:
    user = await client.sign_up("Rae")
    other = await new_thread(client, user)
    await say(client, user, "Hello there", other["id"])  # its conversation is compiled before the fact
    teller = await new_thread(client, user)

    async def kill_and_restart() -> None:
        client.stack.kill_service()
        await asyncio.to_thread(client.stack.start_service)

    # The memory tool ran before the reply's first delta; the replica dies before it stores the turn.
    turn_id = await start_turn_then(client, user, "remember that my cat is Miso", kill_and_restart, teller["id"])
    agent_id = (await client.profile(user.id) or {})["letta_agent_id"]
    deadline = time.monotonic() + 30
    while any(
        run["status"] in ("created", "running")
        for run in await client.letta("GET", "/v1/runs/", params={"agent_id": agent_id})
    ):
        assert time.monotonic() < deadline, "Letta's run did not finish"
        await asyncio.sleep(0.2)
    # A cancel has the dead replica's turn recovered from Letta's record now (not when its lease expires).
    cancelled = await client.http.post(url(client, "/api/v1/chat/cancel"), headers=user.headers)
    assert cancelled.status_code == 202, cancelled.text
    stored = await client.db.fetch("select role, status from public.messages where turn_id = $1::uuid", turn_id)
    assert {row["role"]: row["status"] for row in stored} == {"user": "complete", "assistant": "complete"}
    # Which tools a recovered run called is not read back: the memory may have changed.
    assert await versions(client, other) == (1, 0)

    start = await recompiles(client)
    for thread in (other, teller):
        answer = await say(client, user, QUESTION, thread["id"])
        assert "Miso" in answer["content"], (thread["id"], answer["content"])
    assert await recompiles(client) == start + 2
