"""Feedback on the assistant's replies through the in-process API on the real Postgres (migrations, RLS): the round
trip, changing and removing it, who may rate what, the bounds, and the history and the export showing it. Letta is
unreachable here (connection refused): the feedback is stored all the same and its send is logged as failed; what
Letta receives is tested on the real stack (tests/e2e/test_feedback.py)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from devstack.keys import SigningKey
from service.web.state import services_of
from tests.integration.support import assert_problem, ready_user

pytestmark = pytest.mark.integration


async def a_turn(db: asyncpg.Connection[Any], user_id: uuid.UUID, *, reply_status: str = "complete") -> dict[str, Any]:
    """A stored turn of the user, as the service writes one: their message and the assistant's reply."""
    turn_id = uuid.uuid4()
    ids = {}
    for role, status, content in (("user", "complete", "Hi"), ("assistant", reply_status, "Hello! How can I help?")):
        ids[role] = await db.fetchval(
            "insert into public.messages (user_id, turn_id, role, content, status, letta_run_id, letta_message_id) "
            "values ($1, $2, $3, $4, $5, 'run-00000000-0000-4000-8000-000000000001', "
            "case when $3 = 'assistant' then 'message-00000000-0000-4000-8000-000000000002' end) returning id",
            user_id,
            turn_id,
            role,
            content,
            status,
        )
    return ids


def feedback_url(message_id: Any) -> str:
    return f"/api/v1/chat/messages/{message_id}/feedback"


async def sent_to_letta(client: AsyncTestClient[Litestar]) -> None:
    """Wait for the sends to Letta the requests started (after the response)."""
    await services_of(client.app.state).feedback.drain()


async def test_feedback_round_trip_change_and_delete(
    client: AsyncTestClient[Litestar],
    db: asyncpg.Connection[Any],
    database_url: str,
    signing_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user_id, headers = await ready_user(database_url, signing_key, own_agent=True)
    turn = await a_turn(db, user_id)
    reply = turn["assistant"]

    with caplog.at_level(logging.WARNING, logger="service.chat"):
        response = await client.put(
            feedback_url(reply), headers=headers, json={"rating": "down", "comment": "Too vague.\n# not a heading"}
        )
        assert response.status_code == 200, response.text
        first = response.json()
        assert set(first) == {"rating", "comment", "created_at", "updated_at"}
        assert (first["rating"], first["comment"]) == ("down", "Too vague.\n# not a heading")
        await sent_to_letta(client)
    # Letta is unreachable: the feedback is kept, not marked as sent, and the failure is logged.
    row = await db.fetchrow("select * from public.message_feedback where message_id = $1", reply)
    assert (row["user_id"], row["rating"], row["letta_sent_at"], row["letta_step_id"]) == (user_id, "down", None, None)
    failed = [r for r in caplog.records if r.getMessage() == "feedback not sent to Letta"]
    assert [r.message_id for r in failed] == [str(reply)]  # type: ignore[attr-defined]

    # The history shows it with the reply (and nothing on the user's own message).
    page = (await client.get("/api/v1/chat/history", headers=headers)).json()["messages"]
    assert [(m["role"], m["feedback"]) for m in page] == [("assistant", first), ("user", None)]

    # Rated again: replaced (one row), the comment gone, updated_at moved, created_at kept.
    await asyncio.sleep(0.01)
    response = await client.put(feedback_url(reply), headers=headers, json={"rating": "up"})
    assert response.status_code == 200, response.text
    second = response.json()
    assert (second["rating"], second["comment"], second["created_at"]) == ("up", None, first["created_at"])
    assert second["updated_at"] > first["updated_at"]
    assert await db.fetchval("select count(*) from public.message_feedback where user_id = $1", user_id) == 1
    # A blank comment is no comment.
    response = await client.put(feedback_url(reply), headers=headers, json={"rating": "up", "comment": "  \n "})
    assert response.status_code == 200 and response.json()["comment"] is None

    # The export carries it: JSON as in the history, Markdown under the reply, the comment quoted and escaped.
    await client.put(feedback_url(reply), headers=headers, json={"rating": "down", "comment": "Too vague.\n# nope"})
    exported = (await client.get("/api/v1/chat/export", headers=headers)).json()["messages"]
    assert [(m["role"], m["feedback"] and m["feedback"]["comment"]) for m in exported] == [
        ("user", None),
        ("assistant", "Too vague.\n# nope"),
    ]
    markdown = (await client.get("/api/v1/chat/export", headers=headers, params={"format": "markdown"})).text
    assert markdown.endswith("Hello! How can I help?\n\n**Your feedback:** 👎 down\n\n> Too vague.\n> \\# nope\n")

    # Removed: 204, gone from the table and the history; removing again is still 204.
    response = await client.delete(feedback_url(reply), headers=headers)
    assert response.status_code == 204, response.text
    assert await db.fetchval("select count(*) from public.message_feedback where message_id = $1", reply) == 0
    page = (await client.get("/api/v1/chat/history", headers=headers)).json()["messages"]
    assert [m["feedback"] for m in page] == [None, None]
    assert (await client.delete(feedback_url(reply), headers=headers)).status_code == 204
    await sent_to_letta(client)


async def test_only_your_own_finished_replies_take_feedback(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    owner_id, owner = await ready_user(database_url, signing_key, own_agent=True)
    _, other = await ready_user(database_url, signing_key, own_agent=True)
    turn = await a_turn(db, owner_id)
    reply = turn["assistant"]
    assert (await client.put(feedback_url(reply), headers=owner, json={"rating": "up", "comment": "mine"})).is_success

    # Another user's reply, or no such message: 404 for both methods, and the owner's feedback is untouched.
    for headers, message_id in ((other, reply), (other, turn["user"]), (owner, uuid.uuid4())):
        for method in ("PUT", "DELETE"):
            response = await client.request(
                method, feedback_url(message_id), headers=headers, json={"rating": "down"} if method == "PUT" else None
            )
            body = assert_problem(response, 404)
            assert (body["code"], body["detail"]) == ("no_such_message", "no such message"), (method, message_id)
    row = await db.fetchrow("select rating, comment from public.message_feedback where message_id = $1", reply)
    assert dict(row) == {"rating": "up", "comment": "mine"}

    # Your own message, or a reply still being written: 422.
    pending = (await a_turn(db, owner_id, reply_status="pending"))["assistant"]
    for message_id, detail in ((turn["user"], "assistant's replies"), (pending, "still being written")):
        for method in ("PUT", "DELETE"):
            response = await client.request(
                method, feedback_url(message_id), headers=owner, json={"rating": "up"} if method == "PUT" else None
            )
            body = assert_problem(response, 422)
            assert body["code"] == "message_not_rateable" and detail in body["detail"], (method, message_id)
    assert await db.fetchval("select count(*) from public.message_feedback where user_id = $1", owner_id) == 1

    # Without a token: 401.
    assert_problem(await client.put(feedback_url(reply), json={"rating": "up"}), 401)
    assert_problem(await client.delete(feedback_url(reply)), 401)
    await sent_to_letta(client)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"rating": "meh"}, 400),
        ({"rating": 1}, 400),
        ({"comment": "no rating"}, 400),
        ({"rating": "up", "comment": "x" * 2001}, 400),
        ({"rating": "up", "comment": "\U0001f408" * 2001}, 400),  # characters, not bytes
        ({"rating": "up", "comment": "a\x00b"}, 400),
        ({"rating": "up", "extra": True}, 400),
        ({"rating": "up", "comment": "x" * 30_000}, 413),  # refused before it is read whole
    ],
)
async def test_a_bad_body_is_refused_and_nothing_is_stored(
    client: AsyncTestClient[Litestar],
    db: asyncpg.Connection[Any],
    database_url: str,
    signing_key: SigningKey,
    body: dict[str, Any],
    status: int,
) -> None:
    user_id, headers = await ready_user(database_url, signing_key, own_agent=True)
    reply = (await a_turn(db, user_id))["assistant"]
    assert_problem(await client.put(feedback_url(reply), headers=headers, json=body), status)
    assert await db.fetchval("select count(*) from public.message_feedback") == 0


async def test_the_longest_comment_is_kept_whole(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    user_id, headers = await ready_user(database_url, signing_key, own_agent=True)
    reply = (await a_turn(db, user_id))["assistant"]
    comment = "\U0001f408" * 2000  # 2000 characters, 8000 bytes, 24000 bytes as JSON escapes
    response = await client.put(
        feedback_url(reply),
        headers={**headers, "Content-Type": "application/json"},
        content=('{"rating": "up", "comment": "' + "\\ud83d\\udc08" * 2000 + '"}').encode(),
    )
    assert response.status_code == 200, response.text
    assert await db.fetchval("select comment from public.message_feedback where message_id = $1", reply) == comment
    await sent_to_letta(client)


async def test_a_browser_may_send_the_put(client: AsyncTestClient[Litestar]) -> None:
    """The CORS preflight of a PUT from the frontend's origin (the default CORS_ALLOW_ORIGINS) is allowed."""
    response = await client.options(
        feedback_url(uuid.uuid4()),
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 204, response.text
    assert "PUT" in response.headers["access-control-allow-methods"]
