"""The real stack, booted once per test run: Postgres, Letta 0.16.8, the LiteLLM double, the pg_net
relay, the Edge Function under Deno, and the service as a separate process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from devstack.gotrue import sign_up
from devstack.postgres import LocalPostgres
from devstack.sse import aiter_json_events
from devstack.stack import Stack, StackConfig

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def stack(pg_cluster: LocalPostgres) -> Iterator[Stack]:
    config = StackConfig(
        name="test",
        pg_port=pg_cluster.port,
        letta_port=18283,
        litellm_port=14000,
        service_port=18000,
        auth_port=15321,
        functions_port=15320,
        web_port=15173,
        web_supabase_port=15174,
        service_env={
            "RECONCILE_INTERVAL_SECONDS": "1",
            "PROVISIONING_MAX_ATTEMPTS": "30",
            "RATE_LIMIT_MEMORY_PER_MINUTE": "10",
        },
    )
    stack = Stack(config, postgres=pg_cluster)
    stack.up()
    yield stack
    stack.down()


# What the stack's processes logged during a failed test is added to its report, so a failure seen only in CI's
# output can be read there: the part of each log written since the test's set-up, its last lines.
LOG_LINES_ON_FAILURE = 40
_log_offsets = pytest.StashKey[dict[Path, int]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if not isinstance(stack, Stack):
        return report
    logs = sorted((stack.state_dir / "logs").glob("*.log"))
    if report.when == "setup":
        item.stash[_log_offsets] = {log: log.stat().st_size for log in logs}
    elif report.when == "call" and report.failed:
        offsets = item.stash.get(_log_offsets, {})
        for log in logs:
            with log.open("rb") as file:
                file.seek(offsets.get(log, 0))
                written = _without_deprecation_warnings(file.read().decode(errors="replace").splitlines())
            if written:
                report.sections.append((f"{log.name} during the test", "\n".join(written[-LOG_LINES_ON_FAILURE:])))
    return report


def _without_deprecation_warnings(lines: list[str]) -> list[str]:
    """Letta 0.16.8 warns (two lines each: the warning, then the source line) every time it reads one of its own
    deprecated fields; a dependency of it turns the warnings back on, so they are dropped here instead."""
    kept: list[str] = []
    skip_source = False
    for line in lines:
        if "DeprecationWarning:" in line:
            skip_source = True
        elif not (skip_source and line.startswith("  ")):
            skip_source = False
            kept.append(line)
    return kept


@dataclass
class User:
    id: uuid.UUID
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class StackClient:
    """What the e2e tests do to the stack: sign users up, call the service, look behind it."""

    def __init__(self, stack: Stack, http: httpx.AsyncClient, db: asyncpg.Pool) -> None:
        self.stack = stack
        self.http = http
        self.db = db
        self.master = {"Authorization": f"Bearer {stack.config.master_key}"}

    async def sign_up(self, name: str | None = "Ann", *, wait_active: bool = True) -> User:
        email = f"{uuid.uuid4().hex[:10]}@example.com"
        user_id = await sign_up(self.stack.database_url, email, {"full_name": name} if name else {})
        token = self.stack.access_token(user_id, email=email)
        user = User(user_id, email, token)
        if wait_active:
            await self.wait_status(user.id, "active")
        return user

    async def profile(self, user_id: uuid.UUID) -> dict[str, Any] | None:
        # With the last provisioning failure's upstream text (kept privately) as provisioning_error.
        row = await self.db.fetchrow(
            "select p.*, e.detail as provisioning_error from public.user_profiles p "
            "left join private.provisioning_errors e on e.user_id = p.id where p.id = $1",
            user_id,
        )
        return dict(row) if row else None

    async def wait_status(self, user_id: uuid.UUID, status: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        profile = None
        while time.monotonic() < deadline:
            profile = await self.profile(user_id)
            if profile and profile["agent_status"] == status:
                return profile
            await asyncio.sleep(0.2)
        raise AssertionError(f"user {user_id} not {status} after {timeout}s: {profile}")

    async def wait_for(self, query: str, *args: Any, timeout: float = 60.0) -> Any:
        """Poll a SQL query until it returns a truthy value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.db.fetchval(query, *args)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for: {query} {args}")

    async def titled(self, user: User, thread_id: uuid.UUID | None = None) -> dict[str, Any]:
        """Wait for a thread (the default one if None) to get its title after its first reply; the title's LLM
        calls on the user's key, summed (``total_tokens``, ``cost``: zero when the title fell back)."""
        thread = "coalesce($2::uuid, (select id from public.threads where user_id = $1 and is_default))"
        await self.wait_for(f"select title_source from public.threads where id = {thread}", user.id, thread_id)
        await self.wait_for(
            "select not exists (select 1 from public.llm_calls where user_id = $1 and status = 'pending')", user.id
        )
        row = await self.db.fetchrow(
            "select coalesce(sum(total_tokens), 0)::int as total_tokens, coalesce(sum(cost), 0) as cost "
            "from public.llm_calls where user_id = $1",
            user.id,
        )
        return dict(row)

    # -- behind the service ------------------------------------------------------------------------------
    async def litellm(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(
            method, f"{self.stack.config.litellm_url}{path}", headers=self.master, **kwargs
        )
        response.raise_for_status()
        return response.json()

    async def litellm_user(self, user_id: uuid.UUID) -> dict[str, Any] | None:
        """LiteLLM's ``/user/info`` for the user, or None when LiteLLM does not know it."""
        response = await self.http.get(
            f"{self.stack.config.litellm_url}/user/info", params={"user_id": str(user_id)}, headers=self.master
        )
        if response.status_code in (400, 404):
            return None
        response.raise_for_status()
        body = response.json()
        return body if body.get("user_info") else None

    async def upstream_requests(self) -> list[dict[str, Any]]:
        body = await self.litellm("GET", "/_double/requests")
        return body["requests"] if isinstance(body, dict) else body

    async def letta(self, method: str, path: str, **kwargs: Any) -> Any:
        # Letta runs with a password (secure mode), as in production.
        password = {"Authorization": f"Bearer {self.stack.config.letta_password}"}
        response = await self.http.request(method, f"{self.stack.config.letta_url}{path}", headers=password, **kwargs)
        response.raise_for_status()
        return response.json()

    async def agents_of(self, user_id: uuid.UUID) -> list[dict[str, Any]]:
        return await self.letta("GET", "/v1/agents/", params={"tags": f"user:{user_id}", "match_all_tags": "true"})

    async def providers_named(self, name: str) -> list[dict[str, Any]]:
        providers = await self.letta("GET", "/v1/providers/", params={"name": name})
        return [p for p in providers if p["name"] == name]

    # -- the service -------------------------------------------------------------------------------------
    async def chat(self, user: User, content: str, **kwargs: Any) -> httpx.Response:
        return await self.http.post(
            f"{self.stack.config.service_url}/api/v1/chat/message",
            headers=user.headers,
            json={"content": content},
            timeout=120,
            **kwargs,
        )

    async def chat_stream(self, user: User, content: str) -> list[tuple[str, dict[str, Any]]]:
        """Send a message with Accept: text/event-stream and return the parsed events."""
        events: list[tuple[str, dict[str, Any]]] = []
        async with self.http.stream(
            "POST",
            f"{self.stack.config.service_url}/api/v1/chat/message",
            headers={**user.headers, "Accept": "text/event-stream"},
            json={"content": content},
            timeout=120,
        ) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            async for name, data in aiter_json_events(response):
                events.append((name, data))
        return events


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[StackClient]:
    async with httpx.AsyncClient(timeout=30) as http:
        pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
        try:
            yield StackClient(stack, http, pool)
        finally:
            await pool.close()
