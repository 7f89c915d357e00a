"""The threads migration on data written by the schema before it: every message lands in its user's default
thread, every user gets one, and writers that name no thread keep working."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from devstack.migrate import MIGRATIONS_DIR, apply_migrations_async
from devstack.postgres import LocalPostgres
from tests.integration.support import database_before_migration

pytestmark = pytest.mark.integration

THREADS = "20261130000600"


async def test_existing_messages_move_into_each_users_default_thread(pg_cluster: LocalPostgres, tmp_path: Path) -> None:
    name, url = await database_before_migration(pg_cluster, tmp_path, THREADS)

    conn = await asyncpg.connect(url)
    try:
        talker, quiet = uuid.uuid4(), uuid.uuid4()
        for user_id, email in ((talker, "talker@example.com"), (quiet, "quiet@example.com")):
            await conn.execute("insert into auth.users (id, email) values ($1, $2)", user_id, email)
        # The old schema's writes: messages without threads, over several days.
        await conn.execute(
            "insert into public.messages (user_id, turn_id, role, content, status, created_at) "
            "select $1, gen_random_uuid(), case when i % 2 = 0 then 'user' else 'assistant' end, 'old ' || i, "
            "'complete', timestamptz '2026-11-01' + make_interval(hours => i) from generate_series(1, 50) i",
            talker,
        )
        assert await conn.fetchval("select count(*) from public.user_profiles") == 2  # the signup trigger's rows

        assert await apply_migrations_async(url, bootstrap=False) == [
            p.name.split("_", 1)[0] for p in sorted(MIGRATIONS_DIR.glob("*.sql")) if p.name >= THREADS
        ]

        threads = await conn.fetch("select * from public.threads order by user_id")
        assert sorted(t["user_id"] for t in threads) == sorted([talker, quiet])
        assert all(t["is_default"] and t["letta_conversation_id"] is None for t in threads)
        default = next(t for t in threads if t["user_id"] == talker)
        moved = await conn.fetchrow(
            "select count(*) as n, count(*) filter (where thread_id = $2) as in_default, max(created_at) as newest "
            "from public.messages where user_id = $1",
            talker,
            default["id"],
        )
        assert moved["n"] == moved["in_default"] == 50
        assert default["last_message_at"] == moved["newest"]  # the thread list orders it by its newest message

        # A writer that names no thread still writes into the default thread; a new user gets one at signup.
        await conn.execute(
            "insert into public.messages (user_id, turn_id, role, content) values ($1, gen_random_uuid(), 'user', 'x')",
            quiet,
        )
        assert await conn.fetchval(
            "select thread_id = (select id from public.threads where user_id = $1 and is_default) "
            "from public.messages where user_id = $1",
            quiet,
        )
        newcomer = uuid.uuid4()
        await conn.execute("insert into auth.users (id, email) values ($1, 'new@example.com')", newcomer)
        assert (
            await conn.fetchval("select count(*) from public.threads where user_id = $1 and is_default", newcomer) == 1
        )
    finally:
        await conn.close()
        pg_cluster.drop_database(name)


def test_the_migration_is_the_one_named_here() -> None:
    # The test above splits the migrations at THREADS: it must stay the threads migration.
    assert [p.name for p in MIGRATIONS_DIR.glob(f"{THREADS}_*.sql")] == [f"{THREADS}_threads.sql"]
