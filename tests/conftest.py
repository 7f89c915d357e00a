"""Shared fixtures: one real PostgreSQL cluster per test run, with our migrations as a template.

Integration tests get their own database copied from the migrated template (~70 ms each); the
end-to-end stack (tests/e2e) runs in the same cluster.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devstack.migrate import apply_migrations
from devstack.postgres import LocalPostgres
from devstack.stack import DEVSTACK
from service.observability import tracing

TEST_PG_PORT = 55322
# LiteLLM (imported by the double's contract test) must use its bundled price map, not fetch one.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[LocalPostgres]:
    state_dir = DEVSTACK / "run" / "test"
    # One test run at a time owns the test stack's folder and ports: a second run would wipe them.
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = (state_dir.parent / "test.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pytest.exit("another test run is using the test stack (.devstack/run/test); wait for it to finish", 3)
    data_dir = state_dir / "pg"
    if data_dir.exists():
        stale = LocalPostgres(data_dir, TEST_PG_PORT)
        if stale.is_running():
            stale.stop()
    # Every run starts from nothing: no database, LiteLLM state or key a previous run left can make a test pass.
    shutil.rmtree(state_dir, ignore_errors=True)
    cluster = LocalPostgres(data_dir, TEST_PG_PORT)
    cluster.init()
    cluster.start()
    yield cluster
    cluster.stop()
    lock.close()


@pytest.fixture(scope="session")
def app_template(pg_cluster: LocalPostgres) -> str:
    """A database with the local Supabase bootstrap, every migration and pgTAP; copied per test."""
    pg_cluster.create_database("app_template", extensions=["pgtap"])
    apply_migrations(pg_cluster.url("app_template"), bootstrap=True)
    return "app_template"


@pytest.fixture(scope="session")
def new_database(pg_cluster: LocalPostgres, app_template: str) -> Callable[[], str]:
    def create() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        pg_cluster.psql(f"create database {name} template {app_template}", "postgres")
        return pg_cluster.url(name)

    return create


@pytest.fixture
def database_url(new_database: Callable[[], str]) -> str:
    return new_database()


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, its spans kept in memory (unit and e2e tests of the traces)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.start(provider)
    yield exporter
    tracing.stop()
