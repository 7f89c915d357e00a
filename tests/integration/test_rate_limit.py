"""Per-user rate limits against the real Postgres: exact limits, Retry-After, isolation, refill,
replicas hammering one bucket, the 429 problem, and failing open."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from litestar import Litestar, get
from litestar.middleware import ASGIMiddleware
from litestar.testing import AsyncTestClient
from litestar.types import ASGIApp, Receive, Scope, Send

from devstack.gotrue import sign_up
from service.auth.tokens import Principal
from service.rate_limit import PostgresRateLimiter, RateDecision, check_rate_limit, rate_limit
from service.web.problems import exception_handlers
from tests.integration.support import PoolFactory, new_user_id

pytestmark = pytest.mark.integration

HOUR = 3600  # windows long enough that no hit is refilled while a test runs


@pytest.fixture
async def pool(new_pool: PoolFactory) -> asyncpg.Pool[Any]:
    return await new_pool(max_size=10, statement_cache_size=0)


@pytest.fixture
async def user_id(database_url: str) -> uuid.UUID:
    return await new_user_id(database_url)


async def hits(limiter: PostgresRateLimiter, user: uuid.UUID, bucket: str, n: int) -> list[RateDecision]:
    return [await limiter.hit(user, bucket) for _ in range(n)]


async def test_limit_is_exact_and_remaining_counts_down(pool: asyncpg.Pool[Any], user_id: uuid.UUID) -> None:
    limiter = PostgresRateLimiter(pool, {"chat": (5, 60)})
    decisions = await hits(limiter, user_id, "chat", 7)
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0, 0]
    assert all(d.enforced and d.limit == 5 and d.window_seconds == 60 for d in decisions)
    assert all(d.retry_after_seconds == 0 for d in decisions[:5])


async def test_retry_after_is_when_the_next_hit_is_admitted(pool: asyncpg.Pool[Any], user_id: uuid.UUID) -> None:
    # 5 per 60 s: one hit is earned back every 12 s, so a refused hit waits (just under) 12 s, not 60.
    limiter = PostgresRateLimiter(pool, {"chat": (5, 60)})
    refused = (await hits(limiter, user_id, "chat", 6))[-1]
    assert not refused.allowed
    assert 11 <= refused.retry_after_seconds <= 12


async def test_buckets_and_users_are_independent(
    pool: asyncpg.Pool[Any], user_id: uuid.UUID, database_url: str
) -> None:
    other_user = await sign_up(database_url, "other@example.com")
    limiter = PostgresRateLimiter(pool, {"chat": (2, HOUR), "memory": (3, HOUR)})
    assert [d.allowed for d in await hits(limiter, user_id, "chat", 3)] == [True, True, False]
    assert [d.allowed for d in await hits(limiter, user_id, "memory", 4)] == [True, True, True, False]
    assert [d.allowed for d in await hits(limiter, other_user, "chat", 3)] == [True, True, False]


async def test_bucket_refills_after_the_window(pool: asyncpg.Pool[Any], user_id: uuid.UUID) -> None:
    limiter = PostgresRateLimiter(pool, {"burst": (2, 1)})
    assert [d.allowed for d in await hits(limiter, user_id, "burst", 3)] == [True, True, False]
    await asyncio.sleep(1.05)
    assert [d.allowed for d in await hits(limiter, user_id, "burst", 3)] == [True, True, False]
    # Smooth, not windowed: one emission interval (0.5 s) earns exactly one more hit, not a new window.
    await asyncio.sleep(0.6)
    assert [d.allowed for d in await hits(limiter, user_id, "burst", 2)] == [True, False]


async def test_two_replicas_hammering_one_bucket_admit_exactly_the_limit(database_url: str, user_id: uuid.UUID) -> None:
    async with (
        asyncpg.create_pool(database_url, min_size=10, max_size=10, statement_cache_size=0) as pool_a,
        asyncpg.create_pool(database_url, min_size=10, max_size=10, statement_cache_size=0) as pool_b,
    ):
        replicas = [PostgresRateLimiter(p, {"chat": (50, HOUR)}) for p in (pool_a, pool_b)]
        decisions = await asyncio.gather(*(replicas[i % 2].hit(user_id, "chat") for i in range(200)))
    assert all(d.enforced for d in decisions)
    assert sum(d.allowed for d in decisions) == 50
    # Advisory under contention (a hit that queued on the row lock judges by its earlier clock), but never off range.
    remaining = [d.remaining for d in decisions if d.allowed]
    assert max(remaining) == 49 and min(remaining) == 0
    assert all(d.retry_after_seconds > 0 for d in decisions if not d.allowed)


async def test_one_row_per_user_and_bucket(pool: asyncpg.Pool[Any], user_id: uuid.UUID, database_url: str) -> None:
    limiter = PostgresRateLimiter(pool, {"chat": (3, HOUR)})
    await hits(limiter, user_id, "chat", 10)
    assert await pool.fetchval("select count(*) from private.rate_limit_counters where user_id = $1", user_id) == 1
    # Rows go with the user.
    await pool.execute("delete from auth.users where id = $1", user_id)
    assert await pool.fetchval("select count(*) from private.rate_limit_counters") == 0


async def test_database_rejects_nonsense_limits(pool: asyncpg.Pool[Any], user_id: uuid.UUID) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError):
        await pool.fetchrow("select * from private.rate_limit_hit($1, 'chat', 0, 60)", user_id)
    with pytest.raises(ValueError, match="limit >= 1"):
        PostgresRateLimiter(pool, {"chat": (0, 60)})
    with pytest.raises(ValueError, match="must match"):
        PostgresRateLimiter(pool, {"Chat Messages": (1, 60)})
    with pytest.raises(LookupError):
        await PostgresRateLimiter(pool, {"chat": (1, 60)}).hit(user_id, "typo")


async def test_fails_open_when_the_database_is_unavailable(database_url: str, user_id: uuid.UUID) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    limiter = PostgresRateLimiter(pool, {"chat": (1, HOUR)})
    await pool.close()
    decisions = await hits(limiter, user_id, "chat", 3)
    assert all(d.allowed and not d.enforced for d in decisions)


async def test_check_rate_limit_returns_the_decision(pool: asyncpg.Pool[Any], user_id: uuid.UUID) -> None:
    limiter = PostgresRateLimiter(pool, {"chat": (1, HOUR)})
    user = Principal(role="authenticated", claims={}, user_id=user_id)
    assert (await check_rate_limit(limiter, user, "chat")).allowed
    refused = await check_rate_limit(limiter, user, "chat")
    assert not refused.allowed and refused.retry_after_seconds > 0
    service = Principal(role="service_role", claims={"role": "service_role"}, user_id=None)
    assert (await check_rate_limit(limiter, service, "chat")).allowed


# ---------------------------------------------------------------------------- HTTP guard


class FakeAuth(ASGIMiddleware):
    """Stands in for the Supabase auth middleware: X-Test-User names the caller ("service" = service role)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        raw = dict(scope["headers"]).get(b"x-test-user", b"").decode()
        if raw == "service":
            scope["user"] = Principal(role="service_role", claims={"role": "service_role"}, user_id=None)
        elif raw:
            scope["user"] = Principal(role="authenticated", claims={}, user_id=uuid.UUID(raw))
        await next_app(scope, receive, send)


@get("/limited", guards=[rate_limit("chat")], sync_to_thread=False)
def limited() -> dict[str, bool]:
    return {"ok": True}


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """Not the service (the shared ``client``): an app with only the guarded route and its limiter."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # Created on the app's own event loop (the test client runs the app on another one), as in service.app.
        async with asyncpg.create_pool(database_url, min_size=1, max_size=2, statement_cache_size=0) as pool:
            # The guard finds the limiter among the services the app was wired with.
            app.state.services = SimpleNamespace(rate_limiter=PostgresRateLimiter(pool, {"chat": (2, 60)}))
            yield

    app = Litestar(
        route_handlers=[limited], middleware=[FakeAuth()], exception_handlers=exception_handlers, lifespan=[lifespan]
    )
    async with AsyncTestClient(app) as client:
        yield client


async def test_guard_answers_429_problem_with_retry_after(
    client: AsyncTestClient[Litestar], user_id: uuid.UUID
) -> None:
    headers = {"X-Test-User": str(user_id)}
    for _ in range(2):
        assert (await client.get("/limited", headers=headers)).status_code == 200
    response = await client.get("/limited", headers=headers)
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    retry_after = int(response.headers["retry-after"])
    assert 29 <= retry_after <= 30  # 2 per 60 s: one hit back every 30 s
    body = response.json()
    assert body["status"] == 429 and body["title"] == "Too Many Requests"
    assert body["bucket"] == "chat" and body["limit"] == 2 and body["window_seconds"] == 60
    assert body["retry_after"] == retry_after
    assert body["instance"] == "/limited" and body["request_id"]


async def test_guard_exempts_the_service_role_and_anonymous_routes(client: AsyncTestClient[Litestar]) -> None:
    for _ in range(5):
        assert (await client.get("/limited", headers={"X-Test-User": "service"})).status_code == 200
        assert (await client.get("/limited")).status_code == 200
