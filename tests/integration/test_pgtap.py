"""Runs the pgTAP suite (supabase/tests/database/*.test.sql, the `supabase test db` layout) with
pg_prove against a fresh copy of the migrated template database (tests/conftest.py), which has the
local Supabase bootstrap, every migration and pgTAP. The search path pg_prove's psql sessions get
mirrors the `postgres` role's on Supabase ("$user", public, extensions).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devstack.migrate import ROOT

pytestmark = pytest.mark.integration

TESTS_DIR = ROOT / "supabase" / "tests" / "database"
_PSQL_FALLBACKS = (Path("/usr/lib/postgresql/15/bin/psql"), Path("/usr/bin/psql"))


def _psql() -> str:
    found = shutil.which("psql")
    if found:
        return found
    for candidate in _PSQL_FALLBACKS:
        if candidate.exists():
            return str(candidate)
    pytest.fail("psql not found (pg_prove runs the tests through it): install postgresql-client")


def test_pgtap_suite_passes(database_url: str) -> None:
    url = database_url
    pg_prove = shutil.which("pg_prove")
    if pg_prove is None:
        pytest.fail("pg_prove not found: apt-get install libtap-parser-sourcehandler-pgtap-perl")
    test_files = sorted(TESTS_DIR.glob("*.test.sql"))
    assert test_files, f"no pgTAP tests in {TESTS_DIR}"

    psql = _psql()
    env = {**os.environ, "PGOPTIONS": '-c search_path="$user",public,extensions'}
    result = subprocess.run(
        [pg_prove, "--psql-bin", psql, "--dbname", url, "--failures", *map(str, test_files)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"pg_prove failed:\n{output}"
    assert "Result: PASS" in output, output
