"""The Supabase Edge Functions' own Deno test suites (signup-webhook: auth, validation, signing, relay).

Each function has its own deno.json (imports map + lockfile, as `supabase functions deploy` expects),
so each is tested with `--config` pointing at it: Deno discovers configs from the working directory,
not from the tested files. npm packages come from DENO_DIR, filled by devstack/install.sh.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devstack.stack import DENO, DENO_DIR, ROOT

FUNCTIONS = sorted(p.parent for p in (ROOT / "supabase" / "functions").glob("*/deno.json"))

pytestmark = pytest.mark.integration


def run_deno(*args: str) -> subprocess.CompletedProcess[str]:
    # No skip when deno is missing: `make test` installs it, so a missing binary is a real failure.
    assert DENO.exists(), f"{DENO} is missing: run `make install` (devstack/install.sh installs deno)"
    env = {**os.environ, "DENO_DIR": str(DENO_DIR), "DENO_NO_UPDATE_CHECK": "1", "NO_COLOR": "1"}
    return subprocess.run(
        [str(DENO), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )


def test_there_are_edge_functions() -> None:
    assert FUNCTIONS, "no supabase/functions/*/deno.json found"


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda p: p.name)
def test_deno_suite_passes(function: Path) -> None:
    config = str(function / "deno.json")
    # --frozen: the lockfile pins every npm package's integrity; a drifted import fails here.
    result = run_deno("test", "--frozen", "--config", config, "--allow-net", "--allow-env", str(function))
    assert result.returncode == 0, f"deno test failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda p: p.name)
def test_deno_lint_and_format(function: Path) -> None:
    config = str(function / "deno.json")
    for args in (("lint", "--config", config, str(function)), ("fmt", "--check", "--config", config, str(function))):
        result = run_deno(*args)
        assert result.returncode == 0, f"deno {args[0]} failed:\n{result.stdout}\n{result.stderr}"
