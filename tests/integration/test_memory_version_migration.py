"""The memory-version migration on data written by the schema before it: every profile starts at version 0 and every
existing thread's compiled version is unknown, so its conversation is recompiled once, at its next turn."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from devstack.migrate import MIGRATIONS_DIR, apply_migrations_async
from devstack.postgres import LocalPostgres
from tests.integration.support import database_before_migration

pytestmark = pytest.mark.integration

MEMORY_VERSION = "20261130000900"


async def test_existing_profiles_start_at_zero_and_existing_conversations_are_recompiled_once(
    pg_cluster: LocalPostgres, tmp_path: Path
) -> None:
    name, url = await database_before_migration(pg_cluster, tmp_path, MEMORY_VERSION)

    conn = await asyncpg.connect(url)
    try:
        user_id = uuid.uuid4()
        await conn.execute("insert into auth.users (id, email) values ($1, 'old@example.com')", user_id)
        # The previous schema's rows: an active profile, a thread that talked in a Letta conversation.
        await conn.execute(
            "update public.user_profiles set agent_status = 'active', letta_agent_id = 'agent-old' where id = $1",
            user_id,
        )
        thread_id = await conn.fetchval(
            "insert into public.threads (user_id, letta_agent_id, letta_conversation_id) "
            "values ($1, 'agent-old', 'conv-old') returning id",
            user_id,
        )

        assert await apply_migrations_async(url, bootstrap=False) == [
            p.name.split("_", 1)[0] for p in sorted(MIGRATIONS_DIR.glob("*.sql")) if p.name >= MEMORY_VERSION
        ]

        row = await conn.fetchrow(
            "select p.memory_version, t.compiled_memory_version, t.letta_conversation_id from public.threads t "
            "join public.user_profiles p on p.id = t.user_id where t.id = $1",
            thread_id,
        )
        assert dict(row) == {"memory_version": 0, "compiled_memory_version": None, "letta_conversation_id": "conv-old"}
        # A profile made after it starts at 0 too; only the service moves either number.
        newcomer = uuid.uuid4()
        await conn.execute("insert into auth.users (id, email) values ($1, 'new@example.com')", newcomer)
        assert await conn.fetchval("select memory_version from public.user_profiles where id = $1", newcomer) == 0
    finally:
        await conn.close()
        pg_cluster.drop_database(name)


def test_the_migration_is_the_one_named_here() -> None:
    # The test above splits the migrations at MEMORY_VERSION: it must stay the memory-version migration.
    assert [p.name for p in MIGRATIONS_DIR.glob(f"{MEMORY_VERSION}_*.sql")] == [f"{MEMORY_VERSION}_memory_version.sql"]
