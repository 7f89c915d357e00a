"""Readiness: public probes learn which dependency is down, never its error text (internal hosts)."""

from __future__ import annotations

import pytest

from devstack.keys import SigningKey
from tests.integration.support import app_client

pytestmark = pytest.mark.integration

ADMIN_KEY = "admin-key-for-health-0123456789abcdef"


async def test_readiness_says_what_is_down_and_only_the_admin_key_sees_why(
    database_url: str, signing_key: SigningKey
) -> None:
    # Letta and LiteLLM are unreachable here (support.UNREACHABLE), the database is up.
    async with app_client(database_url, signing_key, ADMIN_API_KEY=ADMIN_KEY) as client:
        public = await client.get("/health/ready")
        admin = await client.get("/health/ready", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        wrong = await client.get("/health/ready", headers={"Authorization": "Bearer not-the-admin-key"})
    assert public.status_code == 503
    assert public.json()["checks"] == {"database": {"ok": True}, "letta": {"ok": False}, "litellm": {"ok": False}}
    assert "127.0.0.1" not in public.text
    assert wrong.json() == public.json()
    checks = admin.json()["checks"]
    assert admin.status_code == 503 and checks["letta"]["ok"] is False and checks["letta"]["error"]
    assert all("latency_ms" in check for check in checks.values())
