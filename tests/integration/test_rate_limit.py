"""Rate limits against the real Postgres: exact limits, Retry-After, isolation, refill, replicas hammering one
bucket, the 429 problem, and failing open; per user, and per anonymous subject (the auth pass-through's limits
per client IP and per email: two replicas sharing them, the trusted-proxy rule, expired rows cleaned up)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar, get
from litestar.middleware import ASGIMiddleware
from litestar.testing import AsyncTestClient
from litestar.types import ASGIApp, Receive, Scope, Send

from devstack.gotrue import sign_up
from service.auth.passthrough.controller import AuthPassthroughController
from service.auth.passthrough.service import (
    LOGIN_PER_EMAIL,
    LOGIN_PER_IP,
    AuthPassthrough,
    bucket_limits,
    key_secret,
)
from service.auth.tokens import Principal
from service.rate_limit import PostgresRateLimiter, RateDecision, check_rate_limit, rate_limit, subject_key
from service.settings import Settings
from service.web.problems import exception_handlers
from service.wiring import DEPENDENCIES
from tests.asgi import PeerFromHeader
from tests.integration.support import PoolFactory, new_user_id, service_settings

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
    user = Principal(role="authenticated", user_id=user_id)
    assert (await check_rate_limit(limiter, user, "chat")).allowed
    refused = await check_rate_limit(limiter, user, "chat")
    assert not refused.allowed and refused.retry_after_seconds > 0
    service = Principal(role="service_role", user_id=None)
    assert (await check_rate_limit(limiter, service, "chat")).allowed


# ---------------------------------------------------------------------------- HTTP guard


class FakeAuth(ASGIMiddleware):
    """Stands in for the Supabase auth middleware: X-Test-User names the caller ("service" = service role)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        raw = dict(scope["headers"]).get(b"x-test-user", b"").decode()
        if raw == "service":
            scope["user"] = Principal(role="service_role", user_id=None)
        elif raw:
            scope["user"] = Principal(role="authenticated", user_id=uuid.UUID(raw))
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


# ---------------------------------------------------------------------------- anonymous subjects (hit_key)

SECRET = b"k" * 32


def key(value: str) -> str:
    return subject_key(SECRET, "ip", value)


async def key_hits(limiter: PostgresRateLimiter, subject: str, bucket: str, n: int) -> list[RateDecision]:
    return [await limiter.hit_key(key(subject), bucket) for _ in range(n)]


async def test_keyed_limit_has_the_same_semantics(pool: asyncpg.Pool[Any]) -> None:
    limiter = PostgresRateLimiter(pool, {"auth.login.ip": (5, 60), "auth.login.email": (2, HOUR)})
    decisions = await key_hits(limiter, "198.51.100.7", "auth.login.ip", 7)
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0, 0]
    assert 11 <= decisions[-1].retry_after_seconds <= 12  # one hit earned back every 12 s
    # Another subject, and the same subject in another bucket, are other counters.
    assert (await limiter.hit_key(key("198.51.100.8"), "auth.login.ip")).allowed
    assert [d.allowed for d in await key_hits(limiter, "198.51.100.7", "auth.login.email", 3)] == [True, True, False]
    rows = await pool.fetch("select bucket, key from private.rate_limit_key_counters order by bucket, key")
    assert len(rows) == 3
    assert all(len(row["key"]) == 64 and "198.51" not in row["key"] for row in rows)


async def test_a_raw_address_is_never_stored(pool: asyncpg.Pool[Any]) -> None:
    limiter = PostgresRateLimiter(pool, {"auth.login.email": (2, HOUR)})
    with pytest.raises(ValueError, match="subject_key"):
        await limiter.hit_key("ada@example.com", "auth.login.email")
    # The table refuses it too, should a caller bypass the check.
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.fetchrow("select * from private.rate_limit_hit_key('ada@example.com', 'auth.login.email', 2, 60)")
    with pytest.raises(asyncpg.InvalidParameterValueError):
        await pool.fetchrow("select * from private.rate_limit_hit_key($1, 'auth.login.email', 0, 60)", key("x"))


async def test_expired_rows_are_deleted_as_hits_come_in(pool: asyncpg.Pool[Any]) -> None:
    limiter = PostgresRateLimiter(pool, {"short": (1, 1), "long": (1, HOUR)})
    for i in range(10):
        assert (await limiter.hit_key(key(f"192.0.2.{i}"), "short")).allowed
    assert (await limiter.hit_key(key("live"), "long")).allowed
    assert await pool.fetchval("select count(*) from private.rate_limit_key_counters") == 11
    await asyncio.sleep(1.1)  # the ten "short" rows are now full buckets, i.e. no different from no row

    # Each admitted hit retires up to four expired rows, of any bucket: three hits clear the ten.
    for i in range(3):
        assert (await limiter.hit_key(key(f"198.51.100.{i}"), "long")).allowed
    rows = await pool.fetch("select bucket from private.rate_limit_key_counters")
    assert sorted(row["bucket"] for row in rows) == ["long"] * 4  # the live rows stay
    # A refused hit writes (and deletes) nothing; the counter it hit is intact.
    assert not (await limiter.hit_key(key("live"), "long")).allowed
    assert await pool.fetchval("select count(*) from private.rate_limit_key_counters") == 4
    # Deleting an expired row changed no decision: its subject starts afresh, exactly as after the refill.
    assert (await limiter.hit_key(key("192.0.2.0"), "short")).allowed


async def test_keyed_hits_fail_open_when_the_database_is_unavailable(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    limiter = PostgresRateLimiter(pool, {"auth.login.ip": (1, HOUR)})
    await pool.close()
    decisions = await key_hits(limiter, "198.51.100.7", "auth.login.ip", 3)
    assert all(d.allowed and not d.enforced for d in decisions)


# ---------------------------------------------------------------------------- the auth pass-through's limits

PASSTHROUGH_ENV = {"AUTH_PASSTHROUGH_ENABLED": "true", "SUPABASE_ANON_KEY": "anon-key-for-tests"}


def passthrough_settings(database_url: str, **env: str) -> Settings:
    return service_settings(database_url, **{**PASSTHROUGH_ENV, **env})


async def test_two_replicas_share_the_limits_per_email_and_per_ip(database_url: str) -> None:
    settings = passthrough_settings(
        database_url, RATE_LIMIT_LOGIN_PER_EMAIL_PER_HOUR="10", RATE_LIMIT_LOGIN_PER_IP_PER_HOUR="25"
    )
    async with (
        asyncpg.create_pool(database_url, min_size=5, max_size=5, statement_cache_size=0) as pool_a,
        asyncpg.create_pool(database_url, min_size=5, max_size=5, statement_cache_size=0) as pool_b,
    ):
        replicas = [
            AuthPassthrough.from_settings(settings, PostgresRateLimiter(p, bucket_limits(settings)))
            for p in (pool_a, pool_b)
        ]

        async def login(i: int, ip: str, email: str) -> str | None:
            try:
                await replicas[i % 2].admit("login", replicas[i % 2].client(ip, []), email)
            except Exception as exc:  # the refusal: a rate_limited DomainError naming its bucket
                return str(getattr(exc, "members", {}).get("bucket"))
            return None

        # Credential stuffing against one account from 60 addresses: 10 get through, whichever replica they hit.
        by_email = await asyncio.gather(*(login(i, f"198.51.100.{i}", "Ada@example.com") for i in range(60)))
        assert by_email.count(None) == 10
        assert set(by_email) == {None, LOGIN_PER_EMAIL}
        # One address trying 60 accounts: 25 get through.
        by_ip = await asyncio.gather(*(login(i, "203.0.113.9", f"user{i}@example.com") for i in range(60)))
        assert by_ip.count(None) == 25
        assert set(by_ip) == {None, LOGIN_PER_IP}
        # Every stored key is a digest made with the replicas' shared secret: one row per subject and bucket.
        secret = key_secret(settings)
        stored = {
            (r["bucket"], r["key"])
            for r in await pool_a.fetch("select bucket, key from private.rate_limit_key_counters")
        }
        assert (LOGIN_PER_EMAIL, subject_key(secret, "email", "ada@example.com")) in stored
        assert (LOGIN_PER_IP, subject_key(secret, "ip", "203.0.113.9")) in stored
        assert not any("@" in k or "." in k for _, k in stored)


@asynccontextmanager
async def passthrough_client(
    database_url: str, forwarded: list[str], **env: str
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The pass-through in-process on the test's database; Supabase Auth refuses every login (wrong password)
    and ``forwarded`` collects the Sb-Forwarded-For of each request it got."""
    settings = passthrough_settings(database_url, **env)

    def gotrue(request: httpx.Request) -> httpx.Response:
        forwarded.append(request.headers.get("sb-forwarded-for", ""))
        body = {"code": "invalid_credentials", "message": "Invalid login credentials"}
        return httpx.Response(400, json=body, headers={"X-Supabase-Api-Version": "2024-01-01"})

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with (
            asyncpg.create_pool(database_url, min_size=1, max_size=2, statement_cache_size=0) as pool,
            httpx.AsyncClient(transport=httpx.MockTransport(gotrue)) as http,
        ):
            # What the wiring provides: the pass-through with its limiter on this database (None while it is off).
            passthrough = None
            if settings.auth_passthrough_enabled:
                limiter = PostgresRateLimiter(pool, bucket_limits(settings))
                passthrough = AuthPassthrough.from_settings(settings, limiter)
            app.state.services = SimpleNamespace(settings=settings, http=http, db=pool, passthrough=passthrough)
            yield

    app = Litestar(
        route_handlers=[AuthPassthroughController],
        dependencies=DEPENDENCIES,
        middleware=[PeerFromHeader()],
        exception_handlers=exception_handlers,
        lifespan=[lifespan],
    )
    async with AsyncTestClient(app) as client:
        yield client


async def login_statuses(client: AsyncTestClient[Litestar], attempts: list[tuple[str, str]]) -> list[int]:
    statuses = []
    for i, (peer, forwarded_for) in enumerate(attempts):
        headers = {"X-Test-Peer": peer, "X-Forwarded-For": forwarded_for}
        body = {"email": f"user{i}@example.com", "password": "wrong password"}
        statuses.append((await client.post("/api/v1/auth/login", json=body, headers=headers)).status_code)
    return statuses


async def test_a_client_cannot_choose_its_bucket_with_x_forwarded_for(database_url: str) -> None:
    forwarded: list[str] = []
    env = {
        "RATE_LIMIT_LOGIN_PER_IP_PER_HOUR": "3",
        "TRUSTED_PROXIES": "10.0.0.0/8",
        "AUTH_PASSTHROUGH_FORWARD_IP": "true",
        "SUPABASE_SERVICE_KEY": "sb_secret_for_tests_0123456789",
    }
    async with passthrough_client(database_url, forwarded, **env) as client:
        # Straight from the internet, a new made-up X-Forwarded-For each time: still one address, one bucket.
        spoofed = await login_statuses(client, [("203.0.113.7", f"192.0.2.{i}") for i in range(5)])
        assert spoofed == [400, 400, 400, 429, 429]
        assert forwarded == ["203.0.113.7"] * 3

        # Through our proxy (10.0.0.5): the address it appended is the client, each with its own bucket, and
        # whatever the client put before it is ignored.
        forwarded.clear()
        proxied = [("10.0.0.5", f"6.6.6.6, 198.51.100.{i % 2}") for i in range(8)]
        assert await login_statuses(client, proxied) == [400] * 6 + [429, 429]
        assert sorted(forwarded) == ["198.51.100.0"] * 3 + ["198.51.100.1"] * 3

        # The proxy's own address is a third bucket, used when it sends no header.
        forwarded.clear()
        assert await login_statuses(client, [("10.0.0.5", "")] * 4) == [400, 400, 400, 429]
        assert forwarded == ["10.0.0.5"] * 3

        response = await client.post(
            "/api/v1/auth/login",
            json={"email": "late@example.com", "password": "x"},
            headers={"X-Test-Peer": "203.0.113.7"},
        )
        assert response.status_code == 429
        assert response.json()["bucket"] == LOGIN_PER_IP and 1 <= int(response.headers["retry-after"]) <= 1200


async def test_off_the_pass_through_answers_404_and_counts_nothing(
    database_url: str, db: asyncpg.Connection[Any]
) -> None:
    forwarded: list[str] = []
    async with passthrough_client(database_url, forwarded, AUTH_PASSTHROUGH_ENABLED="false") as client:
        response = await client.post("/api/v1/auth/login", json={"email": "a@example.com", "password": "x"})
    assert response.status_code == 404
    assert json.loads(response.text)["code"] == "auth_passthrough_disabled"
    assert forwarded == []
    assert await db.fetchval("select count(*) from private.rate_limit_key_counters") == 0
