"""What the integration tests share: settings for the service on a test database and the app under a test
client, signed-up users (one whose agent is ready), polling the database, and the problem-details check.

The fixtures built on these are in tests/integration/conftest.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from devstack.gotrue import sign_up
from devstack.keys import SigningKey
from devstack.migrate import MIGRATIONS_DIR, apply_migrations_async
from devstack.postgres import LocalPostgres
from service.app import create_app
from service.settings import Settings, load_settings

SUPABASE_URL = "http://127.0.0.1:54321"
ISSUER = f"{SUPABASE_URL}/auth/v1"
SERVICE_KEY = "test-service-role-key-0123456789abcdef"
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens here: Letta and LiteLLM unless a test says otherwise

PoolFactory = Callable[..., Awaitable["asyncpg.Pool[Any]"]]  # the ``new_pool`` fixture


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


def app_client(database_url: str, signing_key: SigningKey | None = None, **env: str) -> AsyncTestClient[Litestar]:
    """The service in-process on ``database_url`` (``service_settings``), for ``async with``."""
    return AsyncTestClient(create_app(service_settings(database_url, signing_key, **env)))


async def new_user_id(database_url: str) -> uuid.UUID:
    """A user signed up GoTrue-style with an address of their own; the trigger gives them a ``pending`` profile."""
    return await sign_up(database_url, f"{uuid.uuid4().hex[:10]}@example.com")


async def ready_user(
    database_url: str, signing_key: SigningKey, *, ready: bool = True, own_agent: bool = False
) -> tuple[uuid.UUID, dict[str, str]]:
    """A user signed up GoTrue-style (profile ``pending``; ``ready`` marks the agent active, ``agent-x``, or with
    ``own_agent`` an agent id no other user has) and the ``Authorization`` header of their access token."""
    user_id = await new_user_id(database_url)
    if ready:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "update public.user_profiles set agent_status = 'active', letta_agent_id = $2 where id = $1",
                user_id,
                f"agent-{uuid.uuid4()}" if own_agent else "agent-x",
            )
        finally:
            await conn.close()
    return user_id, {"Authorization": f"Bearer {signing_key.access_token(user_id, issuer=ISSUER)}"}


async def wait_until(
    db: asyncpg.Connection[Any] | asyncpg.Pool[Any], query: str, *args: Any, timeout: float = 10.0, what: str = ""
) -> Any:
    """Run ``query`` every 0.1 s until its value is truthy and return it; after ``timeout`` seconds the test
    fails, saying ``what`` it waited for (or the query)."""
    deadline = time.monotonic() + timeout
    while not (value := await db.fetchval(query, *args)):
        if time.monotonic() >= deadline:
            pytest.fail(f"{what or query} not seen in {timeout}s")
        await asyncio.sleep(0.1)
    return value


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """An RFC 9457 problem with the given status, the request id echoed; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def database_before_migration(pg_cluster: LocalPostgres, tmp_path: Path, version: str) -> tuple[str, str]:
    """A new database with every migration older than ``version`` applied (the schema a migration finds in a
    project that has data); returns its name (to drop it) and URL. ``apply_migrations_async(url,
    bootstrap=False)`` then applies the rest, ``version`` first."""
    name = f"m_{uuid.uuid4().hex[:12]}"
    pg_cluster.create_database(name)
    url = pg_cluster.url(name)
    before = tmp_path / "before"
    before.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.name < version:
            shutil.copy(path, before / path.name)
    await apply_migrations_async(url, bootstrap=True, migrations_dir=before)
    return name, url
