"""The web client's generated TypeScript types (examples/web/src/types) are what a fresh generation gives, from the
API as the app builds it and from the database as the migrations make it, and the client type-checks against them.
When this fails after a change to the API or a migration, run `make types` and commit the result."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from devstack import web
from devstack.migrate import apply_migrations
from devstack.postgres import LocalPostgres

pytestmark = pytest.mark.integration


def test_the_committed_types_are_a_fresh_generation(pg_cluster: LocalPostgres) -> None:
    # A database of its own: the shared template has pgTAP's functions in `public`, which no project has.
    name = f"types_{uuid.uuid4().hex[:8]}"
    pg_cluster.create_database(name)
    apply_migrations(pg_cluster.url(name), bootstrap=True)
    assert web.stale_types(pg_cluster.url(name)) == [], "stale generated types: run `make types`"


def test_the_web_client_type_checks() -> None:
    checked = subprocess.run(
        [str(web.NODE_BIN / "tsc"), "--noEmit", "--pretty", "false"], cwd=web.WEB, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
