"""The service's connection pool (service.db) on the real Postgres."""

from __future__ import annotations

import pytest

from service.db import create_pool
from tests.integration.support import service_settings

pytestmark = pytest.mark.integration


async def test_release_skips_the_reset_query_but_rolls_back_an_open_transaction(database_url: str) -> None:
    # One connection: every acquire gets the same one back.
    pool = await create_pool(service_settings(database_url, DATABASE_POOL_MIN="1", DATABASE_POOL_MAX="1"))
    try:
        async with pool.acquire() as conn:
            backend = await conn.fetchval("select pg_backend_pid()")
            # Session state survives a release: no `RESET ALL` round trip was spent on it.
            await conn.execute("set statement_timeout = '7s'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("select pg_backend_pid()") == backend
            assert await conn.fetchval("show statement_timeout") == "7s"
            await conn.execute("reset statement_timeout")
            # A transaction left open is still rolled back before the connection is used again.
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute("create table leftover (id int)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("select pg_backend_pid()") == backend
            assert await conn.fetchval("select txid_current_if_assigned()") is None
            assert await conn.fetchval("select to_regclass('public.leftover')") is None
    finally:
        await pool.close()
