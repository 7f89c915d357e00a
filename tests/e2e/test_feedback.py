"""Feedback on replies on the real stack: stored, shown in the history and the export, and sent to the Letta step
that wrote the reply (Letta 0.16.8's step feedback), read back from Letta itself."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import StackClient, User

pytestmark = pytest.mark.e2e


def url(client: StackClient, path: str) -> str:
    return f"{client.stack.config.service_url}{path}"


async def say(client: StackClient, user: User, content: str) -> dict[str, Any]:
    response = await client.chat(user, content)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def rate(client: StackClient, user: User, message_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.http.put(
        url(client, f"/api/v1/chat/messages/{message_id}/feedback"), headers=user.headers, json=body
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def letta_step(client: StackClient, message_id: str) -> dict[str, Any]:
    """The Letta step our service sent the reply's feedback to, once it recorded the send."""
    step_id = await client.wait_for(
        "select letta_step_id from public.message_feedback where message_id = $1 and letta_sent_at is not null",
        uuid.UUID(message_id),
    )
    return dict(await client.letta("GET", f"/v1/steps/{step_id}"))


async def letta_feedback_becomes(client: StackClient, step_id: str, expected: str | None) -> None:
    deadline = time.monotonic() + 30
    while (step := await client.letta("GET", f"/v1/steps/{step_id}"))["feedback"] != expected:
        assert time.monotonic() < deadline, f"the step's feedback stayed {step['feedback']!r}, not {expected!r}"
        await asyncio.sleep(0.2)


async def test_thumbs_down_with_a_comment_reaches_history_export_and_the_letta_step(client: StackClient) -> None:
    user = await client.sign_up("Fay")
    # A turn of two Letta steps: the memory tool's, then the reply's.
    reply = await say(client, user, "remember that my cat is Miso")
    assert reply["status"] == "complete" and reply["content"] == "Got it, I will remember that my cat is Miso."
    message_id = reply["message_id"]

    feedback = await rate(client, user, message_id, {"rating": "down", "comment": "Say it shorter."})
    assert (feedback["rating"], feedback["comment"]) == ("down", "Say it shorter.")

    # Letta: the rating is on the step that wrote the reply, of this turn's run; the tool step has none.
    step = await letta_step(client, message_id)
    assert step["feedback"] == "negative" and step["run_id"] == reply["run_id"]
    letta_message_id = await client.db.fetchval(
        "select letta_message_id from public.messages where id = $1", uuid.UUID(message_id)
    )
    # (Letta's step route lists a letta_v1_agent's reply text as a reasoning_message: the id is what matters.)
    written = await client.letta("GET", f"/v1/steps/{step['id']}/messages")
    assert letta_message_id in {m["id"] for m in written}
    steps = await client.letta("GET", f"/v1/runs/{reply['run_id']}/steps")
    assert len(steps) == 2 and [s["feedback"] for s in steps if s["id"] != step["id"]] == [None]

    # The history and the export show it with the reply.
    history = (await client.http.get(url(client, "/api/v1/chat/history"), headers=user.headers)).json()["messages"]
    assert [(m["id"], m["feedback"]) for m in history] == [(message_id, feedback), (reply["user_message_id"], None)]
    exported = (await client.http.get(url(client, "/api/v1/chat/export"), headers=user.headers)).json()["messages"]
    assert [m["feedback"] for m in exported] == [None, feedback]
    markdown = (
        await client.http.get(url(client, "/api/v1/chat/export"), headers=user.headers, params={"format": "markdown"})
    ).text
    assert "Miso.\n\n**Your feedback:** 👎 down\n\n> Say it shorter.\n" in markdown

    # Changed: Letta follows; removed: Letta's feedback is cleared (it takes null).
    await rate(client, user, message_id, {"rating": "up"})
    await letta_feedback_becomes(client, step["id"], "positive")
    response = await client.http.delete(
        url(client, f"/api/v1/chat/messages/{message_id}/feedback"), headers=user.headers
    )
    assert response.status_code == 204, response.text
    await letta_feedback_becomes(client, step["id"], None)

    # Another user cannot rate it (and Letta is not touched).
    other = await client.sign_up("Gus")
    response = await client.http.put(
        url(client, f"/api/v1/chat/messages/{message_id}/feedback"), headers=other.headers, json={"rating": "up"}
    )
    assert response.status_code == 404 and response.json()["code"] == "no_such_message"
    await asyncio.sleep(0.5)
    assert (await client.letta("GET", f"/v1/steps/{step['id']}"))["feedback"] is None


async def test_changes_in_quick_succession_leave_letta_with_the_last_rating(client: StackClient) -> None:
    user = await client.sign_up("Hal")
    reply = await say(client, user, "Hello there")
    message_id = reply["message_id"]
    # Four changes at once (in whatever order they land): their sends to Letta overlap, and Letta keeps whichever
    # arrives last.
    await asyncio.gather(*(rate(client, user, message_id, {"rating": r}) for r in ("up", "down", "up", "down")))
    final = await client.db.fetchval(
        "select rating from public.message_feedback where message_id = $1", uuid.UUID(message_id)
    )
    # Recorded as sent only by a sender that found the rating unchanged after Letta took it; a sender of an older
    # rating still on its way re-reads and sends again.
    step = await letta_step(client, message_id)
    await client.wait_for(
        "select rating = $2 from public.message_feedback where message_id = $1 and letta_sent_at is not null",
        uuid.UUID(message_id),
        final,
    )
    await asyncio.sleep(1)
    expected = {"up": "positive", "down": "negative"}[final]
    assert (await client.letta("GET", f"/v1/steps/{step['id']}"))["feedback"] == expected
