"""The service's direct Postgres connection (asyncpg).

Direct SQL rather than PostgREST: transactions, ``FOR UPDATE SKIP LOCKED`` and leases need it. The
service connects as a privileged role (``postgres`` via Supabase's pooler), so it is the only writer of
messages and usage while RLS keeps the frontend to reading its own rows.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import asyncpg

from service.settings import Settings

# The pool's type in signatures: asyncpg's stubs make Pool generic, the runtime class is not (and Litestar
# evaluates handler signatures at start-up).
if TYPE_CHECKING:
    Database = asyncpg.Pool[Any]
else:
    Database = asyncpg.Pool


# What "the database cannot answer right now" looks like from asyncpg: refused or dropped connections, a server
# shutting down or starting, a pool that could not hand out a connection in time. Answered as 503, retried.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InterfaceError,
)


async def _init_connection(conn: asyncpg.Connection[Any]) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """Pool release without asyncpg's reset query (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL``): a second round trip after every statement, on the path of every request. The service keeps no
    session state (no ``SET``, advisory locks, ``LISTEN`` or cursors), and asyncpg still rolls back a
    transaction left open before the connection is reused."""


async def create_pool(settings: Settings) -> Database:
    pool = await asyncpg.create_pool(
        settings.database_url.get_secret_value(),
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        # Prepared statements save a round trip per query; Supabase's *transaction* pooler (port 6543) cannot
        # keep them across clients, so they can be switched off (the session pooler and direct connection can).
        statement_cache_size=100 if settings.database_prepared_statements else 0,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
        server_settings={"application_name": "ai-chat-backend"},
    )
    assert pool is not None
    return pool
