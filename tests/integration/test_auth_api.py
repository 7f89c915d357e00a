"""The service in-process against the real Postgres: token checks, problem details, /auth/me.

Letta and LiteLLM are unreachable (the shared ``client``): /auth/me must not need them."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from devstack.gotrue import sign_up
from devstack.keys import SigningKey
from tests.integration.support import ISSUER, SERVICE_KEY, assert_problem, wait_until

pytestmark = pytest.mark.integration


async def test_me_returns_claims_and_the_profile_the_trigger_created(
    client: AsyncTestClient[Litestar], database_url: str, signing_key: SigningKey
) -> None:
    user_id = await sign_up(database_url, "ann@example.com", {"full_name": "Ann"})
    token = signing_key.access_token(user_id, issuer=ISSUER, email="ann@example.com")
    response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == str(user_id)
    assert body["claims"]["email"] == "ann@example.com"
    assert body["profile"]["agent_status"] == "pending"
    assert body["profile"]["display_name"] == "Ann"
    assert "litellm_key" not in response.text


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda k, u: SigningKey.generate().access_token(u, issuer=ISSUER), id="forged"),
        pytest.param(lambda k, u: k.access_token(u, issuer=ISSUER, exp=int(time.time()) - 120), id="expired"),
        pytest.param(lambda k, u: k.access_token(u, issuer=ISSUER, audience="other"), id="wrong-audience"),
        pytest.param(lambda k, u: k.access_token(u, issuer="https://evil.example/auth/v1"), id="wrong-issuer"),
        pytest.param(lambda k, u: "garbage", id="garbage"),
    ],
)
async def test_bad_tokens_get_401_problem_details(
    client: AsyncTestClient[Litestar], signing_key: SigningKey, make_token
) -> None:  # type: ignore[no-untyped-def]
    token = make_token(signing_key, uuid.uuid4())
    response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401)


async def test_missing_or_malformed_authorization_header(client: AsyncTestClient[Litestar]) -> None:
    assert_problem(await client.get("/api/v1/auth/me"), 401)
    body = assert_problem(await client.get("/api/v1/auth/me", headers={"Authorization": "Basic abc"}), 401)
    assert "Bearer" in body["detail"]


async def test_service_key_is_refused_by_default(client: AsyncTestClient[Litestar]) -> None:
    """The service key is no longer a credential of this API (SERVICE_ROLE_IS_ADMIN=true brings back the old
    rule; see test_admin_access.py)."""
    response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {SERVICE_KEY}"})
    assert assert_problem(response, 403)["code"] == "service_role_refused"


async def test_unknown_route_and_method_are_problem_details(client: AsyncTestClient[Litestar]) -> None:
    token_free = await client.get("/health/nope")
    assert_problem(token_free, 404)
    assert_problem(await client.post("/health/live"), 405)


async def test_request_id_is_echoed_when_sane(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "frontend-123"})
    assert response.headers["x-request-id"] == "frontend-123"
    response = await client.get("/health/live", headers={"X-Request-ID": "bad id\nwith newline"})
    assert response.headers["x-request-id"] != "bad id\nwith newline"


async def test_readiness_reports_each_dependency(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] is True
    # Public: up or down only; latency and the error text need the admin key (tests/integration/test_health.py).
    assert checks["letta"] == {"ok": False}
    assert checks["litellm"]["ok"] is False


PASS_THROUGH = {"/api/v1/auth/login", "/api/v1/auth/register", "/api/v1/auth/refresh"}


async def test_openapi_schema_is_served_with_examples_for_every_route(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/v1/auth/me" in paths
    for path, item in paths.items():
        for method, operation in item.items():
            if method not in ("get", "post", "patch", "delete", "put"):
                continue
            assert operation.get("summary"), (method, path)
            if "requestBody" in operation:
                assert "example" in json.dumps(operation["requestBody"]), (method, path, "request example")
            # (A 204 has no body to show.)
            success = [spec for code, spec in operation["responses"].items() if code.startswith("2") and code != "204"]
            assert success or "204" in operation["responses"], (method, path)
            assert all("example" in json.dumps(spec) for spec in success), (method, path)
            # Errors are documented as what they are: problem details (the readiness report is the exception), or
            # on the LLM proxy OpenAI error objects (what OpenAI clients parse).
            error_type = "application/json" if path.startswith("/api/v1/llm/") else "application/problem+json"
            for code, spec in operation["responses"].items():
                if code[0] in "45" and (path, code) != ("/health/ready", "503"):
                    assert list(spec["content"]) == [error_type], (method, path, code)
            # A route that takes a token says it may answer 401; one that does not says so with security [{}].
            public = operation.get("security") == [{}]
            assert public or "401" in operation["responses"], (method, path)
            assert public == (path.startswith(("/health/", "/webhooks/")) or path in PASS_THROUGH), (method, path)


async def test_a_user_not_yet_provisioned_gets_503_with_retry_after_and_provisioning_starts(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    user_id = await sign_up(database_url, "new@example.com")
    headers = {"Authorization": f"Bearer {signing_key.access_token(user_id, issuer=ISSUER)}"}
    response = await client.get("/api/v1/chat/history", headers=headers)
    body = assert_problem(response, 503)
    assert response.headers["retry-after"] == "5"
    assert body["agent_status"] == "pending"
    # On-demand provisioning ran (and, with Letta and LiteLLM unreachable here, recorded why it failed).
    error = await wait_until(db, "select detail from private.provisioning_errors where user_id = $1", user_id)
    assert "ConnectError" in error


async def test_polling_requests_nudge_provisioning_but_never_bypass_its_backoff(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    """A client polling while LiteLLM is down: each request may start an attempt that is due, none starts one
    the backoff has not allowed yet (30 polls in 18 s once made 26 attempts and 78 LiteLLM calls)."""
    user_id = await sign_up(database_url, "poller@example.com")
    headers = {"Authorization": f"Bearer {signing_key.access_token(user_id, issuer=ISSUER)}"}
    for _ in range(30):
        assert (await client.get("/api/v1/chat/history", headers=headers)).status_code == 503
        await asyncio.sleep(0.1)
    attempts = await db.fetchval("select provisioning_attempts from public.user_profiles where id = $1", user_id)
    # 3 s of polling against a backoff of 1-2 s, then 2-4 s: at most 3 attempts (the first one right away).
    assert 1 <= attempts <= 3, attempts
