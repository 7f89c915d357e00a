"""Metrics on the real database: GET /metrics for the admin credential only, the gauges read from the database at
scrape time (exactly what the tables hold), a database that does not answer (the scrape still does, in bounded
time), the metrics port, and a refusal of the Postgres rate limiter counted."""

from __future__ import annotations

import socket
import time
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from devstack.keys import SigningKey
from service.observability import collector
from service.observability.collector import scrape
from service.observability.metrics import REGISTRY
from service.rate_limit import PostgresRateLimiter
from tests.integration.support import PoolFactory, app_client, new_user_id, ready_user, service_settings

pytestmark = pytest.mark.integration

ADMIN_KEY = "test-admin-api-key-0123456789abcdef"


@pytest.fixture
def service_env() -> dict[str, str]:
    return {"ADMIN_API_KEY": ADMIN_KEY}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of a scrape."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


async def test_metrics_answer_the_admin_credential_only(
    client: AsyncTestClient[Litestar], database_url: str, signing_key: SigningKey
) -> None:
    assert (await client.get("/metrics")).status_code == 401
    _, user = await ready_user(database_url, signing_key)
    refused = await client.get("/metrics", headers=user)
    assert refused.status_code == 403 and refused.json()["code"] == "admin_only"
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    scraped = samples(response.text)
    assert sample(scraped, "aichat_metrics_database_up") == 1
    assert sample(scraped, "aichat_db_pool_max_connections") == 10  # DATABASE_POOL_MAX's default
    # The refused scrapes were counted, by route template and status.
    assert (sample(scraped, "aichat_http_requests_total", method="GET", route="/metrics", status="403") or 0) >= 1


async def test_the_database_gauges_are_what_the_tables_hold(database_url: str, pool: asyncpg.Pool[Any]) -> None:
    waiting, failed, claimed, active = [await new_user_id(database_url) for _ in range(4)]
    await pool.execute(
        """
        update public.user_profiles p set agent_status = s.status, provisioning_attempts = s.attempts,
            next_provisioning_at = now() + make_interval(secs => s.due_in),
            provisioning_claimed_until = case when s.claimed then now() + interval '1 minute' end
        from (values ($1::uuid, 'pending', 2, -100, false), ($2, 'failed', 8, 3600, false),
                     ($3, 'provisioning', 1, -500, true), ($4, 'active', 1, 0, false))
            as s(id, status, attempts, due_in, claimed)
        where p.id = s.id
        """,
        waiting,
        failed,
        claimed,
        active,
    )
    # One live lease, one expired.
    await pool.execute(
        "insert into private.chat_turn_leases (user_id, turn_id, holder, expires_at) values "
        "($1, gen_random_uuid(), 'r', now() + interval '30 seconds'), "
        "($2, gen_random_uuid(), 'r', now() - interval '1 second')",
        waiting,
        failed,
    )
    # A turn whose cost is still an estimate, an hour old; one reconciled; an LLM proxy call not reconciled.
    await pool.execute(
        """
        with turns as (select gen_random_uuid() as pending_turn, gen_random_uuid() as final_turn)
        insert into public.messages (user_id, turn_id, role, content, status, cost, cost_final, created_at)
        select $1::uuid, pending_turn, 'assistant', 'a', 'complete', 0.25, false, now() - interval '1 hour' from turns
        union all select $1, final_turn, 'assistant', 'b', 'complete', 0.5, true, now() from turns
        """,
        active,
    )
    await pool.execute(
        "insert into public.llm_calls (user_id, model, stream, status, cost) values ($1, 'm', true, 'complete', 0.125)",
        active,
    )
    # Feedback Letta does not have, on those two replies: one waiting for its retry, one given up.
    await pool.execute(
        "insert into public.message_feedback (message_id, user_id, rating, letta_retry_at) "
        "select id, user_id, 'up', case when cost_final then now() else 'infinity' end "
        "from public.messages where user_id = $1",
        active,
    )
    settings = service_settings(database_url)  # COST_SETTLE_SECONDS: 30
    scraped = samples((await scrape(pool, settings)).decode())
    assert sample(scraped, "aichat_metrics_database_up") == 1
    assert {
        state: sample(scraped, "aichat_provisioning_profiles", state=state) for state in collector.PROVISIONING_STATES
    } == {
        "pending": 1,
        "provisioning": 1,
        "failed": 1,
    }
    assert sample(scraped, "aichat_provisioning_attempts", state="failed") == 8
    assert sample(scraped, "aichat_provisioning_attempts", state="pending") == 2
    # The claimed profile is being worked on: only the unclaimed overdue one is the reconciler's lag.
    assert 100 <= (sample(scraped, "aichat_provisioning_lag_seconds") or 0) < 110
    assert sample(scraped, "aichat_chat_leases_live") == 1
    assert sample(scraped, "aichat_feedback_unsent", state="waiting") == 1
    assert sample(scraped, "aichat_feedback_unsent", state="given_up") == 1
    assert sample(scraped, "aichat_cost_unreconciled", kind="turn") == 1
    assert sample(scraped, "aichat_cost_unreconciled_usd", kind="turn") == 0.25
    assert sample(scraped, "aichat_cost_unreconciled", kind="llm_call") == 1
    assert sample(scraped, "aichat_cost_unreconciled_usd", kind="llm_call") == 0.125
    assert 3600 - 30 <= (sample(scraped, "aichat_cost_reconcile_lag_seconds") or 0) < 3600 - 30 + 10
    in_use = sample(scraped, "aichat_db_pool_connections", state="in_use")
    idle = sample(scraped, "aichat_db_pool_connections", state="idle")
    assert in_use is not None and idle is not None and in_use + idle == pool.get_size()
    text = (await scrape(pool, settings)).decode()
    for user_id in (waiting, failed, claimed, active):
        assert str(user_id) not in text


async def test_a_database_that_does_not_answer_costs_a_scrape_its_timeout_and_no_more(
    database_url: str, new_pool: PoolFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector, "SCRAPE_DB_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(collector, "SNAPSHOT_MAX_AGE_SECONDS", 0.0)
    pool = await new_pool()
    settings = service_settings(database_url)
    locker = await asyncpg.connect(database_url)
    try:
        async with locker.transaction():
            # What a long migration or a stuck transaction does to the scrape's query.
            await locker.execute("lock table public.user_profiles in access exclusive mode")
            started = time.monotonic()
            scraped = samples((await scrape(pool, settings)).decode())
            took = time.monotonic() - started
        assert 0.5 <= took < 1.5
        assert sample(scraped, "aichat_metrics_database_up") == 0
        assert sample(scraped, "aichat_provisioning_profiles", state="pending") is None
        assert sample(scraped, "aichat_websockets_open") == 0  # this replica's own state is still there
        # Once the lock is gone, the next scrape reads the database again; the cancelled query left the pool usable.
        scraped = samples((await scrape(pool, settings)).decode())
        assert sample(scraped, "aichat_metrics_database_up") == 1
        assert sample(scraped, "aichat_provisioning_profiles", state="pending") == 0
    finally:
        await locker.close()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_metrics_port_serves_without_authentication(database_url: str) -> None:
    port = unused_port()
    async with app_client(database_url, METRICS_PORT=str(port)):
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=")
        assert sample(samples(response.text), "aichat_metrics_database_up") == 1
    with pytest.raises(httpx.ConnectError):  # closed with the app
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/metrics")


async def test_a_rate_limit_refusal_in_postgres_is_counted(database_url: str, pool: asyncpg.Pool[Any]) -> None:
    user_id = await new_user_id(database_url)
    limiter = PostgresRateLimiter(pool, {"memory": (1, 60)})
    before = REGISTRY.get_sample_value("aichat_rate_limit_refusals_total", {"bucket": "memory"}) or 0
    assert (await limiter.hit(user_id, "memory")).allowed
    assert not (await limiter.hit(user_id, "memory")).allowed
    assert REGISTRY.get_sample_value("aichat_rate_limit_refusals_total", {"bucket": "memory"}) == before + 1
