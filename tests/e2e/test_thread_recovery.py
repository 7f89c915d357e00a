"""A replica SIGKILLed mid-turn in a thread (a Letta conversation, not the agent's own history), on the real stack
with two replicas: the turn is stored from Letta's record, its run found by our message's otid among all the agent's
conversations, and a client resuming on the other replica gets the whole reply."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import StackClient
from tests.e2e.test_durable_turns import LEASE_AND_GRACE, reference_reply
from tests.e2e.test_resume import SLOW, read, replica_b, stored_reply, stream, texts
from tests.e2e.test_threads import new_thread, say

pytestmark = pytest.mark.e2e

__all__ = ["replica_b"]  # the second replica (a module-scoped fixture of tests/e2e/test_resume.py), used here too


async def test_a_turn_in_a_thread_whose_replica_was_killed_is_recovered_and_resumed_whole(
    client: StackClient, replica_b: str
) -> None:
    expected = await reference_reply(client, SLOW)
    user = await client.sign_up("Xan")
    thread = await new_thread(client, user)
    await say(client, user, "Hello there", thread["id"])  # the thread's conversation exists and has talked
    conversation_id = await client.db.fetchval(
        "select letta_conversation_id from public.threads where id = $1", uuid.UUID(thread["id"])
    )
    assert conversation_id

    events: list[tuple[int, str, dict[str, Any]]] = []
    main = client.stack.config.service_url
    body = {"content": SLOW, "thread_id": thread["id"]}
    async with await stream(client.http, "POST", f"{main}/api/v1/chat/message", user, json=body) as response:
        await read(response, events, stop_after=4)
        await asyncio.sleep(0.5)  # the journal's next batch is written
        client.stack.kill_service()
    killed = time.monotonic()
    turn = events[0][2]
    assert events[0][1] == "turn" and turn["thread_id"] == thread["id"]
    user_message_id = uuid.UUID(turn["user_message_id"])
    try:
        # The replica recorded the run's id off the token path, moments after Letta's first event; one killed in
        # those moments leaves only our message id, which Letta keeps as the message's otid. That is the case made
        # here (the id removed): the recovery must find the run by the otid, and it is not in the agent's own
        # history but in the thread's conversation.
        run_id = await client.db.fetchval("select letta_run_id from public.messages where id = $1", user_message_id)
        assert run_id
        await client.db.execute("update public.messages set letta_run_id = null where id = $1", user_message_id)
        await client.db.execute(
            "update private.chat_turn_leases set letta_run_id = null where turn_id = $1::uuid", turn["turn_id"]
        )
        agent_id = (await client.profile(user.id))["letta_agent_id"]

        async def otids_in(conversation: str) -> set[str | None]:
            params = {"conversation_id": conversation, "limit": 100}
            return {m.get("otid") for m in await client.letta("GET", f"/v1/agents/{agent_id}/messages", params=params)}

        # (Letta stores the turn's messages as its run goes on without its client.)
        deadline = time.monotonic() + 20
        while str(user_message_id) not in await otids_in(conversation_id):
            assert time.monotonic() < deadline, "Letta did not store the turn in the thread's conversation"
            await asyncio.sleep(0.5)
        assert str(user_message_id) not in await otids_in("default")

        # The client resumes on the other replica and follows the turn to its end.
        async with await stream(
            client.http,
            "GET",
            f"{replica_b}/api/v1/chat/turns/{turn['turn_id']}/stream",
            user,
            last_event_id=events[-1][0],
        ) as response:
            assert response.status_code == 200, await response.aread()
            await read(response, events)
    finally:
        await asyncio.to_thread(client.stack.start_service)

    assert events[-1][1] == "done" and events[-1][2]["status"] == "complete", events[-3:]
    assert [e[0] for e in events] == list(range(1, len(events) + 1))  # no gap, no duplicate
    assert texts(events) == await stored_reply(client, turn["turn_id"]) == expected
    assert time.monotonic() - killed < LEASE_AND_GRACE + 10
    stored = await client.db.fetch(
        "select role, status, thread_id, letta_run_id from public.messages where turn_id = $1::uuid order by role",
        turn["turn_id"],
    )
    assert [(r["role"], r["status"], str(r["thread_id"]), r["letta_run_id"]) for r in stored] == [
        ("assistant", "complete", thread["id"], run_id),
        ("user", "complete", thread["id"], run_id),
    ]
    # The thread goes on: its next turn is accepted at once.
    assert (await say(client, user, "Hello again", thread["id"]))["status"] == "complete"
