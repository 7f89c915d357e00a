"""Fixtures the integration modules share (the database fixtures are in tests/conftest.py). Each depends on
``database_url``, so each test still gets its own fresh database; ``signing_key`` is one per module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from devstack.keys import SigningKey
from tests.integration.support import PoolFactory, app_client


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    """The key the module's access tokens are signed with; the app under test gets its JWKS."""
    return SigningKey.generate()


@pytest.fixture
def service_env() -> dict[str, str]:
    """Settings the ``client``'s app gets over ``service_settings``' own; a module overrides this fixture to
    change them."""
    return {}


@pytest.fixture
async def client(
    database_url: str, signing_key: SigningKey, service_env: dict[str, str]
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The service in-process on the test's database, tokens signed with ``signing_key``; Letta and LiteLLM
    are unreachable unless ``service_env`` says otherwise."""
    async with app_client(database_url, signing_key, **service_env) as client:
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A connection to the test's database, to look behind the service."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def new_pool(database_url: str) -> AsyncIterator[PoolFactory]:
    """``await new_pool(**options)``: an asyncpg pool on the test's database (``min_size=1, max_size=4``
    unless ``options`` say otherwise), closed after the test."""
    pools: list[asyncpg.Pool[Any]] = []

    async def create(**options: Any) -> asyncpg.Pool[Any]:
        pool = await asyncpg.create_pool(database_url, **{"min_size": 1, "max_size": 4, **options})
        pools.append(pool)
        return pool

    yield create
    for pool in pools:
        await pool.close()


@pytest.fixture
async def pool(new_pool: PoolFactory) -> asyncpg.Pool[Any]:
    """A pool on the test's database, with ``new_pool``'s options."""
    return await new_pool()
