"""What the integration tests share: settings for the service on a test database, a signed-up user whose
agent is ready, and the problem-details check."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from devstack.gotrue import sign_up
from devstack.keys import SigningKey
from service.settings import Settings, load_settings

SUPABASE_URL = "http://127.0.0.1:54321"
ISSUER = f"{SUPABASE_URL}/auth/v1"
SERVICE_KEY = "test-service-role-key-0123456789abcdef"
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens here: Letta and LiteLLM unless a test says otherwise


def service_settings(database_url: str, signing_key: SigningKey | None = None, **env: str) -> Settings:
    """The service's settings for ``database_url``; ``env`` overrides (``LETTA_BASE_URL="..."``)."""
    values = {
        "DATABASE_URL": database_url,
        "SUPABASE_URL": SUPABASE_URL,
        "SUPABASE_SERVICE_KEY": SERVICE_KEY,
        "LETTA_BASE_URL": UNREACHABLE,
        "LITELLM_BASE_URL": UNREACHABLE,
        "LITELLM_MASTER_KEY": "sk-unused",
        "LOG_LEVEL": "warning",
    }
    if signing_key is not None:
        values["SUPABASE_JWKS"] = json.dumps(signing_key.jwks())
    values.update(env)
    return load_settings(values)


async def ready_user(
    database_url: str, signing_key: SigningKey, *, ready: bool = True
) -> tuple[uuid.UUID, dict[str, str]]:
    """A user signed up GoTrue-style (profile ``pending``; ``ready`` marks the agent active) and the
    ``Authorization`` header of their access token."""
    user_id = await sign_up(database_url, f"{uuid.uuid4().hex[:10]}@example.com")
    if ready:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "update public.user_profiles set agent_status = 'active', letta_agent_id = 'agent-x' where id = $1",
                user_id,
            )
        finally:
            await conn.close()
    return user_id, {"Authorization": f"Bearer {signing_key.access_token(user_id, issuer=ISSUER)}"}


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """An RFC 9457 problem with the given status, the request id echoed; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body
