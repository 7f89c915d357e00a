"""The one-turn-per-user lease in Postgres, as two service replicas see it."""

from __future__ import annotations

import asyncpg
import pytest

from service.chat.service import ChatService
from service.errors import DomainError
from tests.integration.support import PoolFactory, new_user_id

pytestmark = pytest.mark.integration


@pytest.fixture
async def replicas(new_pool: PoolFactory) -> tuple[ChatService, ChatService, asyncpg.Pool]:
    pool_a, pool_b = await new_pool(max_size=2), await new_pool(max_size=2)
    # Only the lease methods are exercised: they need nothing but the database.
    a, b = (ChatService(pool, None, None, None, None, None) for pool in (pool_a, pool_b))  # type: ignore[arg-type]
    return a, b, pool_a


async def test_a_live_lease_on_one_replica_blocks_the_other(replicas, database_url: str) -> None:  # type: ignore[no-untyped-def]
    a, b, _ = replicas
    user_id = await new_user_id(database_url)
    lease = await a.acquire_lease(user_id)
    with pytest.raises(DomainError) as refused:
        await b.acquire_lease(user_id)
    assert refused.value.code == "turn_in_progress"  # a 409 at the web edge
    await a.release_lease(user_id, lease)
    assert await b.acquire_lease(user_id)


async def test_a_crashed_replicas_lease_expires(replicas, database_url: str) -> None:  # type: ignore[no-untyped-def]
    a, b, pool = replicas
    user_id = await new_user_id(database_url)
    await a.acquire_lease(user_id)
    # Replica a dies: nobody renews its lease, and time passes.
    await pool.execute(
        "update private.chat_turn_leases set expires_at = now() - interval '1 second' where user_id = $1", user_id
    )
    taken = await b.acquire_lease(user_id)
    assert await pool.fetchval("select turn_id from private.chat_turn_leases where user_id = $1", user_id) == taken
    assert await pool.fetchval("select holder from private.chat_turn_leases where user_id = $1", user_id) == b.holder


async def test_a_cancel_request_reaches_the_lease_from_any_replica(replicas, database_url: str) -> None:  # type: ignore[no-untyped-def]
    a, b, pool = replicas
    user_id = await new_user_id(database_url)
    assert await b.request_cancel(user_id) is False  # nothing running
    await a.acquire_lease(user_id)
    assert await b.request_cancel(user_id) is True
    assert await pool.fetchval("select cancel_requested from private.chat_turn_leases where user_id = $1", user_id)
