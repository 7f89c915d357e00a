"""Issue: foundation. A GoTrue-shaped signup has a profile; /auth/me answers with that user's token;
forged, expired and wrong-audience tokens get 401 problem details — against the running service."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import pytest

from devstack.keys import SigningKey
from tests.e2e.conftest import StackClient

pytestmark = pytest.mark.e2e


async def test_health_reports_every_dependency(client: StackClient) -> None:
    base = client.stack.config.service_url
    assert (await client.http.get(f"{base}/health/live")).json() == {"status": "ok"}
    public = await client.http.get(f"{base}/health/ready")
    assert public.status_code == 200 and public.json()["checks"] == {
        "database": {"ok": True},
        "letta": {"ok": True},
        "litellm": {"ok": True},
    }, public.text
    # With the admin key, each check's latency too.
    admin = {"Authorization": f"Bearer {client.stack.config.admin_api_key}"}
    ready = await client.http.get(f"{base}/health/ready", headers=admin)
    checks = ready.json()["checks"]
    assert set(checks) == {"database", "letta", "litellm"}
    assert all(check["ok"] and check["latency_ms"] >= 0 for check in checks.values())


async def test_local_user_has_a_profile_and_me_answers(client: StackClient) -> None:
    user = await client.sign_up("Ann", wait_active=False)
    profile = await client.profile(user.id)
    assert profile is not None and profile["display_name"] == "Ann"
    response = await client.http.get(f"{client.stack.config.service_url}/api/v1/auth/me", headers=user.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == str(user.id)
    assert body["claims"]["email"] == user.email
    assert body["profile"]["id"] == str(user.id)


@pytest.mark.parametrize("kind", ["forged", "expired", "wrong-audience"])
async def test_bad_tokens_are_refused_with_problem_details(client: StackClient, kind: str) -> None:
    user = await client.sign_up(wait_active=False)
    issuer = client.stack.config.issuer
    token = {
        "forged": lambda: SigningKey.generate().access_token(user.id, issuer=issuer),
        "expired": lambda: client.stack.access_token(user.id, exp=int(time.time()) - 300),
        "wrong-audience": lambda: client.stack.access_token(user.id, audience="some-other-app"),
    }[kind]()
    response = await client.http.get(
        f"{client.stack.config.service_url}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 401 and problem["title"] == "Unauthorized" and problem["detail"]


async def test_openapi_schema_lists_the_api(client: StackClient) -> None:
    schema = (await client.http.get(f"{client.stack.config.service_url}/schema/openapi.json")).json()
    for path in ("/api/v1/auth/me", "/api/v1/chat/message", "/api/v1/chat/history", "/health/ready"):
        assert path in schema["paths"], path


async def test_cors_preflight_allows_configured_origin_only(client: StackClient) -> None:
    url = f"{client.stack.config.service_url}/api/v1/chat/message"
    headers = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = await client.http.options(url, headers={**headers, "Origin": "http://localhost:3000"})
    assert allowed.headers.get("access-control-allow-origin") == "http://localhost:3000"
    denied = await client.http.options(url, headers={**headers, "Origin": "https://evil.example"})
    assert denied.headers.get("access-control-allow-origin") != "https://evil.example"


async def test_the_quick_start_user_is_ready_when_its_token_is_printed_and_is_reused(client: StackClient) -> None:
    """README's quick start pasted as one block: create_user waits for the agent; a second run reuses the user."""
    email = f"quick-{uuid.uuid4().hex[:8]}@example.com"
    command = [sys.executable, "-m", "devstack.create_user", "--stack", "test", "--email", email, "--name", "Ann"]
    first = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    me = await client.http.get(
        f"{client.stack.config.service_url}/api/v1/auth/me", headers={"Authorization": f"Bearer {first.stdout.strip()}"}
    )
    assert me.status_code == 200 and me.json()["profile"]["agent_status"] == "active", me.text
    second = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "reusing user" in second.stderr, second.stderr
    again = await client.http.get(
        f"{client.stack.config.service_url}/api/v1/auth/me",
        headers={"Authorization": f"Bearer {second.stdout.strip()}"},
    )
    assert again.json()["user_id"] == me.json()["user_id"]
