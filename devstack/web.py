"""The reference web client (examples/web) on the local stack: built with Vite for one stack's URLs, served with
``vite preview``, and its generated TypeScript types kept current.

    python -m devstack.web types           # regenerate examples/web/src/types/{api,database}.ts (`make types`)
    python -m devstack.web types --check   # exit 1 if they differ from a fresh generation

The API's types are openapi-typescript's reading of the service's OpenAPI document, built offline from the app
(no service runs). The database's are what ``supabase gen types --remote=<db url>`` prints for the ``public``
schema of a freshly migrated local database: the Supabase CLI from npm (its Linux binary ships inside an npm
package, nothing is downloaded), formatted with Prettier. Everything runs from examples/web/node_modules,
installed by devstack/install.sh.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from devstack.migrate import apply_migrations
from devstack.postgres import LocalPostgres

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "examples" / "web"
NODE_BIN = WEB / "node_modules" / ".bin"
TYPES = WEB / "src" / "types"
GENERATED = ("api.ts", "database.ts")
# Where `python -m devstack.web types` migrates a scratch database (its own cluster, port and folder).
SCRATCH_DIR = ROOT / ".devstack" / "run" / "types"
SCRATCH_PORT = 55323

# Settings the app needs to build its routes; nothing connects to these addresses.
_PLACEHOLDER_SETTINGS = {
    "DATABASE_URL": "postgresql://postgres:postgres@127.0.0.1:9/postgres",
    "SUPABASE_URL": "http://127.0.0.1:9",
    "LETTA_BASE_URL": "http://127.0.0.1:9",
    "LITELLM_BASE_URL": "http://127.0.0.1:9",
    "LITELLM_MASTER_KEY": "sk-placeholder",
    "LOG_LEVEL": "warning",
}


def _node(tool: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NODE_BIN / tool), *args], cwd=WEB, check=True, text=True, **kwargs)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document the service serves at /schema/openapi.json, built from the app without running it."""
    from service.app import create_app
    from service.settings import load_settings

    app = create_app(load_settings(_PLACEHOLDER_SETTINGS))
    return app.openapi_schema.to_schema()


def generate(out_dir: Path, database_url: str) -> None:
    """Write ``api.ts`` and ``database.ts`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        schema = Path(tmp) / "openapi.json"
        schema.write_text(json.dumps(openapi_document(), indent=2, sort_keys=True))
        _node("openapi-typescript", str(schema), "-o", str(out_dir / "api.ts"), capture_output=True)
        # --workdir: the CLI keeps state in <workdir>/supabase/.temp; not in the project's supabase/ folder.
        database = _node(
            "supabase",
            "gen",
            "types",
            "--lang",
            "typescript",
            f"--remote={database_url}",
            "--schema",
            "public",
            "--workdir",
            tmp,
            capture_output=True,
            # No TLS on the local database: without sslmode the CLI prints a warning into its output. No update
            # check (offline).
            env={**os.environ, "PGSSLMODE": "disable", "SUPABASE_NO_UPDATE_NOTIFIER": "1", "DO_NOT_TRACK": "1"},
        )
    # Formatted as the committed file is (examples/web's Prettier settings), wherever it is written.
    formatted = _node("prettier", "--stdin-filepath", "src/types/x.ts", input=database.stdout, capture_output=True)
    (out_dir / "database.ts").write_text(formatted.stdout)


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A database with the local Supabase bootstrap and every migration, on a cluster of its own."""
    cluster = LocalPostgres(SCRATCH_DIR / "pg", SCRATCH_PORT)
    cluster.init()
    if not cluster.is_running():
        cluster.start()
    name = f"types_{uuid.uuid4().hex[:8]}"
    try:
        cluster.create_database(name)
        apply_migrations(cluster.url(name), bootstrap=True)
        yield cluster.url(name)
    finally:
        if cluster.database_exists(name):
            cluster.drop_database(name)
        cluster.stop()


def stale_types(database_url: str) -> list[str]:
    """The committed generated files that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), database_url)
        return [name for name in GENERATED if (Path(tmp) / name).read_text() != (TYPES / name).read_text()]


def build(out_dir: Path, env: Mapping[str, str]) -> None:
    """The production build (``vite build``) for one stack: ``env`` holds its ``VITE_*`` settings."""
    subprocess.run(
        [str(NODE_BIN / "vite"), "build", "--logLevel", "warn", "--emptyOutDir", "--outDir", str(out_dir)],
        cwd=WEB,
        env={**os.environ, **env},
        check=True,
    )


def preview_argv(out_dir: Path, port: int) -> list[str]:
    """``vite preview``: the built files on ``port``, every unknown path answered with index.html. Vite allows one
    preview per project unless told otherwise; each stack serves its own build on its own port (``make dev`` and
    ``make test`` at once)."""
    vite = str(NODE_BIN / "vite")
    address = ["--host", "127.0.0.1", "--port", str(port), "--strictPort"]
    return [vite, "preview", "--outDir", str(out_dir), *address, "--bypass-lock"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["types"])
    parser.add_argument("--check", action="store_true", help="compare with a fresh generation instead of writing")
    args = parser.parse_args()
    with scratch_database() as database_url:
        if args.check:
            stale = stale_types(database_url)
            if stale:
                sys.exit(f"stale generated types in {TYPES}: {', '.join(stale)} (run `make types`)")
            print("generated types are current")
        else:
            generate(TYPES, database_url)
            print(f"wrote {', '.join(str(TYPES / name) for name in GENERATED)}")


if __name__ == "__main__":
    main()
