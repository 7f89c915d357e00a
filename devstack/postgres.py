"""A throwaway local PostgreSQL 16 cluster (pgvector + pgTAP) for development and tests.

Binaries come from the pgserver wheel unpacked by devstack/install.sh. The server always runs as the
`postgres` OS user, because initdb/postgres refuse to run as root (CI runs as root).

    pg = LocalPostgres(Path(".devstack/pg/dev"), 54322)
    pg.init(); pg.start()
    pg.create_database("letta", extensions=["vector"])

CLI: python -m devstack.postgres {start,stop,status} [--data-dir DIR] [--port N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PG_BIN = REPO_ROOT / ".devstack" / "pgserver" / "pgserver" / "pginstall" / "bin"
SUPERUSER = "postgres"
PASSWORD = "postgres"

# Small-machine settings (2 cores, shared with Letta and the tests). Durability is traded for speed:
# the data is disposable, so fsync and synchronous commit are off.
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "work_mem": "4MB",
    "maintenance_work_mem": "64MB",
    "max_worker_processes": "4",
    "max_parallel_workers": "2",
    "max_parallel_workers_per_gather": "1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "log_min_messages": "warning",
    "log_min_duration_statement": "-1",
}


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class LocalPostgres:
    """One cluster in `data_dir`, listening on 127.0.0.1:`port` (socket dir = data_dir)."""

    def __init__(self, data_dir: Path, port: int, bin_dir: Path = PG_BIN) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.bin_dir = bin_dir
        self.log_path = self.data_dir / "server.log"
        # Root must drop to the postgres OS user; anybody else runs the server as themselves.
        self._as_server_user: list[str] = ["runuser", "-u", SUPERUSER, "--"] if os.geteuid() == 0 else []

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb (trust auth, UTF8) unless the data dir already holds a cluster."""
        if self.initialised:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if self._as_server_user:
            shutil.chown(self.data_dir, SUPERUSER, SUPERUSER)
        # --pwfile sets the superuser's password at bootstrap, so URLs with a password work too.
        with tempfile.NamedTemporaryFile("w", suffix=".pw", delete=False) as pwfile:
            pwfile.write(PASSWORD + "\n")
        try:
            os.chmod(pwfile.name, 0o644)
            self._server_cmd(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile.name}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            )
        finally:
            os.unlink(pwfile.name)
        conf = "\n".join(f"{key} = {value}" for key, value in _SETTINGS.items())
        with (self.data_dir / "postgresql.conf").open("a") as f:
            f.write(f"\n# devstack\n{conf}\nunix_socket_directories = {_quote_literal(str(self.data_dir))}\n")

    def start(self, timeout: int = 60) -> None:
        if self.is_running():
            return
        # The port is given on the command line, so one data dir can be started on any port.
        self._server_cmd(
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(timeout),
            "-o",
            f"-p {self.port}",
        )

    def stop(self) -> None:
        if self.is_running():
            self._server_cmd("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")

    def is_running(self) -> bool:
        if not self.initialised:
            return False
        status = subprocess.run(
            [*self._as_server_user, str(self.bin_dir / "pg_ctl"), "status", "-D", str(self.data_dir)],
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    # -- SQL helpers -------------------------------------------------------------------------------

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL (may be several statements); returns unaligned, tuples-only output."""
        return self._psql(["-At", "-f", "-"], dbname, sql)

    def run_file(self, path: Path, dbname: str = "postgres") -> str:
        return self._psql(["-f", str(path)], dbname)

    def database_exists(self, name: str) -> bool:
        return self.psql(f"select 1 from pg_database where datname = {_quote_literal(name)}") == "1"

    def create_database(self, name: str, extensions: Iterable[str] = (), template: str | None = None) -> None:
        """Create the database if missing, then the extensions if missing (idempotent)."""
        if not self.database_exists(name):
            suffix = f" template {_quote_ident(template)}" if template else ""
            self.psql(f"create database {_quote_ident(name)}{suffix}")
        if ext_sql := "".join(f"create extension if not exists {_quote_ident(e)};\n" for e in extensions):
            self.psql(ext_sql, name)

    def drop_database(self, name: str) -> None:
        self.psql(f"drop database if exists {_quote_ident(name)} with (force)")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    # -- internals ---------------------------------------------------------------------------------

    def _server_cmd(self, binary: str, *args: str) -> None:
        cmd = [*self._as_server_user, str(self.bin_dir / binary), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{binary} failed ({done.returncode}): {done.stderr or done.stdout}\n{log}")

    def _psql(self, args: Sequence[str], dbname: str, stdin: str | None = None) -> str:
        cmd = [
            str(self.bin_dir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            dbname,
            *args,
        ]
        env = {**os.environ, "PGPASSWORD": PASSWORD, "PGCONNECT_TIMEOUT": "5"}
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"psql on {dbname} failed: {done.stderr.strip()}")
        return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description="Manage the local devstack PostgreSQL cluster.")
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / ".devstack" / "pg" / "dev")
    parser.add_argument("--port", type=int, default=54322)
    ns = parser.parse_args()
    pg = LocalPostgres(ns.data_dir, ns.port)
    if ns.action == "start":
        pg.init()
        pg.start()
    elif ns.action == "stop":
        pg.stop()
    print(f"{pg.data_dir}: {'running on ' + pg.url() if pg.is_running() else 'stopped'}")


if __name__ == "__main__":
    main()
