"""The Letta server 0.16.8 (installed by devstack/install.sh) as a local process for dev and tests.

    migrate(pg_url)                      # Letta never creates its own tables: alembic does
    server = LettaServer(8283, pg_url, Path(".devstack/letta.log"), openai_api_key="sk-dev", password="pw")
    server.start(); server.wait_healthy()

The database needs the `vector` extension (LocalPostgres.create_database("letta", ["vector"])).
A pid file next to the log lets another process find and stop a server it did not start.

CLI: python -m devstack.letta_server {stop,status} [--port N] [--log PATH]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEVSTACK_DIR = REPO_ROOT / ".devstack"
LETTA_VENV = DEVSTACK_DIR / "letta-venv"
ALEMBIC_DIR = DEVSTACK_DIR / "letta-alembic"
PSQL = DEVSTACK_DIR / "pgserver" / "pgserver" / "pginstall" / "bin" / "psql"
# Letta's own home (~/.letta by default): logs and config stay inside the repo's .devstack.
LETTA_HOME = DEVSTACK_DIR / "letta-home"
DEV_ENCRYPTION_KEY = "devstack-letta-encryption-key-not-a-secret"


def _letta_env(pg_url: str) -> dict[str, str]:
    # Stray LETTA_* settings or a Sentry DSN from the caller's shell must not change the dev server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETTA_") and k != "SENTRY_DSN"}
    env.update(
        LETTA_PG_URI=pg_url,
        LETTA_DIR=str(LETTA_HOME),
        PYTHONUNBUFFERED="1",
    )
    return env


def alembic_head(versions_dir: Path = ALEMBIC_DIR / "alembic" / "versions") -> str:
    """The single head revision: the one no migration names as its down_revision."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions_dir.glob("*.py"):
        text = path.read_text()
        if m := re.search(r"^revision\b[^=]*=\s*['\"]([0-9a-zA-Z_]+)['\"]", text, re.M):
            revisions.add(m.group(1))
        if m := re.search(r"^down_revision\b[^=]*=\s*(.+)$", text, re.M):
            parents.update(re.findall(r"['\"]([0-9a-zA-Z_]+)['\"]", m.group(1)))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"expected one alembic head in {versions_dir}, found {sorted(heads)}")
    return heads.pop()


def current_revision(pg_url: str) -> str | None:
    """The database's alembic revision, or None when it has none (or cannot be read)."""
    done = subprocess.run(
        [str(PSQL), "-X", "-At", "-d", pg_url, "-c", "select version_num from alembic_version"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    )
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def migrate(pg_url: str) -> bool:
    """`alembic upgrade head` on Letta's database; returns False when it was already at head (~50 ms)."""
    if current_revision(pg_url) == alembic_head():
        return False
    LETTA_HOME.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(LETTA_VENV / "bin" / "python"), "-m", "alembic", "upgrade", "head"],
        cwd=ALEMBIC_DIR,
        env=_letta_env(pg_url),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"letta alembic upgrade failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return True


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie awaiting its (other) parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class LettaServer:
    """`letta server` on 127.0.0.1:`port`, in its own process group, logging to `log_path`."""

    def __init__(
        self,
        port: int,
        pg_url: str,
        log_path: Path,
        env_extra: Mapping[str, str] | None = None,
        *,
        encryption_key: str = DEV_ENCRYPTION_KEY,
        openai_api_key: str | None = None,
        password: str | None = None,
    ) -> None:
        self.port = port
        self.pg_url = pg_url
        self.log_path = log_path.resolve()
        self.pid_path = self.log_path.with_suffix(".pid")
        self.base_url = f"http://127.0.0.1:{port}"
        self._env = _letta_env(pg_url)
        self._env.update(
            # Without a key Letta stores provider API keys (our users' LiteLLM keys) in plain text.
            LETTA_ENCRYPTION_KEY=encryption_key,
            LETTA_DISABLE_TRACING="true",
            LETTA_ENABLE_DB_POOL_MONITORING="false",
            LETTA_UVICORN_WORKERS="1",
        )
        if openai_api_key is not None:
            # Embedding calls (archival memory) send this global key, never the per-user BYOK key.
            self._env["OPENAI_API_KEY"] = openai_api_key
        if password is not None:
            # Secure mode (letta/server/rest_api/app.py): every route but /v1/health/ and /v1/ready/ then needs
            # `Authorization: Bearer <password>`. Without LETTA_SERVER_PASSWORD each worker would make up its own.
            self._env.update(LETTA_SERVER_SECURE="true", LETTA_SERVER_PASSWORD=password)
        self._env.update(env_extra or {})
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.is_running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        LETTA_HOME.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(LETTA_VENV / "bin" / "letta"), "server", "--host", "127.0.0.1", "--port", str(self.port)],
                # Letta reads a `.env` from its working directory: keep it away from the repo's.
                cwd=LETTA_HOME,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() takes down any children too
            )
        self.pid_path.write_text(f"{self._proc.pid}\n")

    def health(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/v1/health/", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout: float = 90.0) -> float:
        """Poll /v1/health/ until it answers 200; returns the seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.health():
                return time.monotonic() - start
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"letta server exited ({self._proc.returncode}):\n{self._log_tail()}")
            time.sleep(0.25)
        raise TimeoutError(f"letta server not healthy after {timeout:.0f} s:\n{self._log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        pid = self._pid()
        if pid is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)  # pid == pgid thanks to start_new_session
            except ProcessLookupError:
                break
            if self._wait_exit(pid, timeout):
                break
        self.pid_path.unlink(missing_ok=True)
        self._proc = None

    def is_running(self) -> bool:
        return self._pid() is not None

    def _pid(self) -> int | None:
        """Our child's pid, else the pid file's if that process is still a letta server."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        try:
            pid = int(self.pid_path.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        # Guards against a recycled pid: the process must still be `letta server`.
        return pid if b"letta\x00server" in cmdline and _alive(pid) else None

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None:
                if self._proc.poll() is not None:
                    return True
            elif not _alive(pid):
                return True
            time.sleep(0.1)
        return False

    def _log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description="Stop or inspect a devstack Letta server.")
    parser.add_argument("action", choices=["stop", "status"])
    parser.add_argument("--port", type=int, default=8283)
    parser.add_argument("--log", type=Path, default=DEVSTACK_DIR / "letta.log")
    ns = parser.parse_args()
    server = LettaServer(ns.port, "", ns.log)
    if ns.action == "stop":
        server.stop()
    state = "healthy" if server.health() else ("running" if server.is_running() else "stopped")
    print(f"letta on {server.base_url}: {state}")


if __name__ == "__main__":
    main()
