"""Apply the local Supabase bootstrap and the Supabase CLI migrations to a Postgres database.

Does what ``supabase migration up --db-url ...`` does, without Docker or the CLI binary: every
``supabase/migrations/<version>_<name>.sql`` not yet recorded in
``supabase_migrations.schema_migrations`` is applied in filename order, each in its own transaction
(any error rolls the file back and stops the run), and its version is recorded in that same
transaction. Before that, ``devstack/supabase_bootstrap.sql`` (LOCAL ONLY: roles, ``auth``, pg_net
stand-in) is applied unless ``bootstrap=False`` / ``--no-bootstrap``.

    python -m devstack.migrate --db-url postgresql://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger("devstack.migrate")

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP_SQL = Path(__file__).resolve().parent / "supabase_bootstrap.sql"
MIGRATIONS_DIR = ROOT / "supabase" / "migrations"

# The Supabase CLI's file pattern: <digits>_<name>.sql; anything else is skipped with a warning.
_MIGRATION_FILE = re.compile(r"^(?P<version>[0-9]+)_(?P<name>.*)\.sql$")

# Serialises concurrent runners against one database (two test workers, two dev processes).
_ADVISORY_LOCK_KEY = 7_305_151_001

# Shared-catalog collisions between concurrent bootstraps: "tuple concurrently updated" (XX000),
# duplicate role/membership (23505, 42710), serialization failure and deadlock.
_RETRYABLE_SQLSTATES = frozenset({"XX000", "23505", "42710", "40001", "40P01"})
_BOOTSTRAP_ATTEMPTS = 5

_HISTORY_DDL = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text not null primary key,
  statements text[],
  name text
);
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    path: Path


def discover_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migration files in ``directory``, in filename (= version) order."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            log.warning("skipping %s: file name does not match <timestamp>_<name>.sql", path.name)
            continue
        migrations.append(Migration(match["version"], match["name"], path))
    versions = [m.version for m in migrations]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise ValueError(f"duplicate migration versions in {directory}: {', '.join(duplicates)}")
    return migrations


async def _apply_bootstrap(conn: asyncpg.Connection) -> None:
    """Apply the bootstrap in one transaction. Roles are cluster-wide (and the advisory lock is
    per database), so a bootstrap of another database in the same cluster can collide on the shared
    catalogs; the script is idempotent, so such a collision is simply retried."""
    sql = BOOTSTRAP_SQL.read_text(encoding="utf-8")
    for attempt in range(1, _BOOTSTRAP_ATTEMPTS + 1):
        try:
            async with conn.transaction():
                await conn.execute(sql)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate not in _RETRYABLE_SQLSTATES or attempt == _BOOTSTRAP_ATTEMPTS:
                raise
            log.info("bootstrap collided with a concurrent one (%s), retrying", exc)
            await asyncio.sleep(0.1 * attempt)
        else:
            log.info("applied %s", BOOTSTRAP_SQL.name)
            return


async def apply_migrations_async(
    db_url: str,
    bootstrap: bool = True,
    migrations_dir: Path = MIGRATIONS_DIR,
) -> list[str]:
    """Apply the bootstrap (optional) and pending migrations. Returns the versions applied now."""
    migrations = discover_migrations(migrations_dir)
    conn = await asyncpg.connect(db_url)
    try:
        # Session-level lock, released when the connection closes (also on errors).
        await conn.execute("select pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
        if bootstrap:
            await _apply_bootstrap(conn)
        await conn.execute(_HISTORY_DDL)

        applied = {
            row["version"] for row in await conn.fetch("select version from supabase_migrations.schema_migrations")
        }
        local = {m.version for m in migrations}
        unknown = sorted(applied - local)
        if unknown:
            log.warning("versions recorded in the database but not found locally: %s", ", ".join(unknown))

        done: list[str] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            sql = migration.path.read_text(encoding="utf-8")
            async with conn.transaction():
                # No parameters: asyncpg uses the simple query protocol, so a file may hold
                # many statements (and DO blocks / dollar quotes), like psql -f.
                await conn.execute(sql)
                await conn.execute(
                    "insert into supabase_migrations.schema_migrations (version, name, statements) values ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    [sql],
                )
            log.info("applied %s", migration.path.name)
            done.append(migration.version)
        return done
    finally:
        await conn.close()


def apply_migrations(
    db_url: str,
    bootstrap: bool = True,
    migrations_dir: Path = MIGRATIONS_DIR,
) -> list[str]:
    """Blocking wrapper of :func:`apply_migrations_async`; also callable from inside an event loop
    (it then runs on a worker thread), e.g. from a session fixture."""
    coro_args = (db_url, bootstrap, migrations_dir)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(apply_migrations_async(*coro_args))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, apply_migrations_async(*coro_args)).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.migrate",
        description="Apply the local Supabase bootstrap and supabase/migrations to a database.",
    )
    parser.add_argument(
        "--db-url",
        default=os.environ.get("DATABASE_URL"),
        help="postgresql://... (default: $DATABASE_URL)",
    )
    parser.add_argument(
        "--no-bootstrap",
        action="store_true",
        help="skip devstack/supabase_bootstrap.sql (the database already is Supabase-shaped)",
    )
    args = parser.parse_args(argv)
    if not args.db_url:
        parser.error("--db-url is required (or set DATABASE_URL)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        applied = apply_migrations(args.db_url, bootstrap=not args.no_bootstrap)
    except (OSError, ValueError, asyncpg.PostgresError) as exc:
        log.error("migration failed: %s", exc)
        return 1
    log.info("applied %d migration(s)", len(applied))
    return 0


if __name__ == "__main__":
    sys.exit(main())
