"""Inputs that once reached a 500 (found by fuzzing the running stack with schemathesis and by hand): each is
now a 4xx problem. In-process API on the real Postgres; Letta and LiteLLM are unreachable, and none of these
requests gets as far as needing them."""

from __future__ import annotations

import base64
import logging
import uuid
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from devstack.keys import SigningKey
from tests.integration.support import assert_problem, ready_user, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def service_env() -> dict[str, str]:
    return {"LOG_LEVEL": "info"}


@pytest.fixture
async def headers(database_url: str, signing_key: SigningKey) -> dict[str, str]:
    _, headers = await ready_user(database_url, signing_key)
    return {**headers, "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/v1/chat/message"), ("PATCH", "/api/v1/agent/memory"), ("POST", "/api/v1/auth/login")],
)
@pytest.mark.parametrize("raw", [b'{"content": "\xff"}', b'{"human": "\xed\xa0\x80"}', b'{"email": "\xc0\xaf"}'])
async def test_a_body_that_is_not_utf8_is_400(
    client: AsyncTestClient[Litestar], headers: dict[str, str], method: str, path: str, raw: bytes
) -> None:
    response = await client.request(method, path, headers=headers, content=raw)
    assert "UTF-8" in assert_problem(response, 400)["detail"]


async def test_json_nested_past_the_decoders_limit_is_400(
    client: AsyncTestClient[Litestar], headers: dict[str, str]
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    response = await client.post("/api/v1/chat/message", headers=headers, content=deep)
    assert "nested" in assert_problem(response, 400)["detail"]


@pytest.mark.parametrize(
    "moment",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-11-29T10:00:00"],  # overflow, overflow, naive
)
async def test_a_made_up_history_cursor_is_400(
    client: AsyncTestClient[Litestar], headers: dict[str, str], moment: str
) -> None:
    cursor = base64.urlsafe_b64encode(f"{moment}|{uuid.uuid4()}".encode()).decode().rstrip("=")
    response = await client.get("/api/v1/chat/history", headers=headers, params={"before": cursor})
    assert "cursor" in assert_problem(response, 400)["detail"]


async def test_usage_up_to_the_first_day_of_the_calendar_is_an_empty_report(
    client: AsyncTestClient[Litestar], headers: dict[str, str]
) -> None:
    response = await client.get("/api/v1/user/usage", headers=headers, params={"to": "0001-01-01"})
    assert response.status_code == 200, response.text
    assert response.json()["days"] == [] and response.json()["start"] == "0001-01-01"


async def test_a_memory_block_with_nul_is_422_not_silently_changed(
    client: AsyncTestClient[Litestar], headers: dict[str, str]
) -> None:
    response = await client.patch("/api/v1/agent/memory", headers=headers, json={"human": "Ada\x00Lovelace"})
    assert assert_problem(response, 422)["label"] == "human"


async def test_a_user_without_a_profile_row_gets_it_created_but_a_deleted_one_is_told_so(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    user_id, headers = await ready_user(database_url, signing_key)
    # Like a user who signed up before the migration: the auth user exists, the profile does not.
    await db.execute("delete from public.user_profiles where id = $1", user_id)
    response = await client.get("/api/v1/user/profile", headers=headers)
    assert assert_problem(response, 404) and response.headers["retry-after"]
    # Provisioning (on demand) recreates the profile first.
    await wait_until(
        db,
        "select exists (select 1 from public.user_profiles where id = $1)",
        user_id,
        timeout=5.0,
        what="the recreated profile",
    )
    await db.execute("delete from auth.users where id = $1", user_id)
    response = await client.get("/api/v1/user/profile", headers=headers)
    assert assert_problem(response, 401)["title"] == "Account Deleted"
    # /auth/me says the same (it answered 200 with profile null).
    response = await client.get("/api/v1/auth/me", headers=headers)
    assert assert_problem(response, 401)["code"] == "account_deleted"


async def test_the_access_log_has_the_status_the_client_got_for_a_refused_token(
    client: AsyncTestClient[Litestar], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="service.access"):
        response = await client.get("/api/v1/user/profile", headers={"X-Request-ID": "log-check-401"})
    assert_problem(response, 401)
    logged = [r for r in caplog.records if r.name == "service.access" and r.path == "/api/v1/user/profile"]
    assert [r.status for r in logged] == [401]  # it said 500: the 401 is rendered after the middleware returned


async def test_reset_without_a_body_is_the_default_reset_not_a_validation_error(
    client: AsyncTestClient[Litestar], headers: dict[str, str]
) -> None:
    response = await client.post("/api/v1/agent/reset", headers=headers)
    # Past validation and the profile: Letta is unreachable in these tests, which is the 503 it then gets.
    assert assert_problem(response, 503)["code"] == "agent_unavailable", response.text


async def test_a_reset_colliding_with_a_reset_says_a_reset_runs(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    user_id, headers = await ready_user(database_url, signing_key)
    await db.execute(
        "insert into private.chat_turn_leases (user_id, turn_id, holder, expires_at) "
        "values ($1, gen_random_uuid(), 'agent-reset', now() + interval '30 seconds')",
        user_id,
    )
    for method, path, body in [
        ("POST", "/api/v1/agent/reset", {}),
        ("POST", "/api/v1/chat/message", {"content": "hi"}),
    ]:
        response = await client.request(method, path, headers=headers, json=body)
        assert assert_problem(response, 409)["code"] == "reset_in_progress", (path, response.text)


async def test_a_banned_user_is_refused_everywhere_and_nothing_is_stored(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    user_id, headers = await ready_user(database_url, signing_key)
    await db.execute("update auth.users set banned_until = now() + interval '1 day' where id = $1", user_id)
    for method, path, body in [
        ("GET", "/api/v1/chat/history", None),
        ("POST", "/api/v1/chat/message", {"content": "let me in"}),
        ("GET", "/api/v1/agent/memory", None),
    ]:
        response = await client.request(method, path, headers=headers, json=body)
        assert assert_problem(response, 403)["code"] == "account_banned", (path, response.text)
    assert not await db.fetchval("select exists (select 1 from public.messages where user_id = $1)", user_id)
    assert not await db.fetchval("select exists (select 1 from private.chat_turn_leases where user_id = $1)", user_id)
    # A ban that ended is no ban.
    await db.execute("update auth.users set banned_until = now() - interval '1 second' where id = $1", user_id)
    assert (await client.get("/api/v1/chat/history", headers=headers)).status_code == 200


async def test_a_refused_cors_preflight_is_problem_details(client: AsyncTestClient[Litestar]) -> None:
    response = await client.options(
        "/api/v1/chat/message",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    body = assert_problem(response, 400)
    assert body["code"] == "cors_refused" and "Disallowed" not in response.text
    allowed = await client.options(
        "/api/v1/chat/message",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )
    assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
