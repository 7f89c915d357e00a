"""The whole system on one machine: what `make dev` runs and what the end-to-end tests boot.

Components, all real except the doubles named as such:
- PostgreSQL (pgserver's 16 + pgvector) with two databases: ``postgres`` (the Supabase schema: local
  bootstrap + our migrations, applied like a deployer would) and ``letta`` (Letta's own tables);
- the pg_net stand-in's relay, which delivers the webhooks our auth trigger queues;
- the LiteLLM test double (devstack/doubles), standing in for LiteLLM in database mode and the LLM;
- Supabase's API on one origin: the API gateway, GoTrue and PostgREST doubles (devstack/doubles/api_gateway.py);
- the Letta 0.16.8 server;
- the signup-webhook Edge Function under Deno (when present);
- the service.

Usage: ``python -m devstack.stack up`` (foreground, Ctrl-C stops everything it started).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from devstack import web
from devstack.keys import SigningKey
from devstack.letta_server import LettaServer
from devstack.letta_server import migrate as migrate_letta
from devstack.migrate import apply_migrations
from devstack.postgres import LocalPostgres

ROOT = Path(__file__).resolve().parent.parent
DEVSTACK = ROOT / ".devstack"
PYTHON = ROOT / ".venv" / "bin" / "python"
DENO = DEVSTACK / "node" / "node_modules" / ".bin" / "deno"
# npm packages for the Edge Function are cached here by devstack/install.sh: nothing downloads at run time.
DENO_DIR = DEVSTACK / "deno-cache"
EDGE_FUNCTION = ROOT / "supabase" / "functions" / "signup-webhook" / "index.ts"


@dataclass
class StackConfig:
    """Ports and secrets of one stack. Dev and test stacks use different ports and state folders."""

    name: str = "dev"
    pg_port: int = 54322
    letta_port: int = 8283
    litellm_port: int = 4000
    service_port: int = 8000
    auth_port: int = 54321
    functions_port: int = 54320
    # The reference web client (examples/web), built for this stack and served here; None: not started.
    web_port: int | None = None
    # The same client built to read threads, history and search with supabase-js (through the PostgREST double, as
    # against a real project) and served here; None: not built.
    web_supabase_port: int | None = None
    # The apikey supabase-js sends (the API gateway double accepts only this one).
    publishable_key: str = "sb_publishable_local-stack"
    master_key: str = "sk-litellm-master-local-dev"
    # Local-only secrets: fixed so a second `make dev` keeps working with stored data.
    webhook_secret: str = "local-dev-webhook-secret-0123456789abcdef"
    standard_webhook_secret: str = "whsec_bG9jYWwtZGV2LXN0YW5kYXJkLXdlYmhvb2stc2VjcmV0"
    admin_api_key: str = "local-dev-admin-api-key-0123456789abcdef"  # Authorization: Bearer <this> on admin routes
    letta_encryption_key: str = "local-dev-letta-encryption-key-0123456789"
    # Letta runs in secure mode with this password; the service sends it (LETTA_API_TOKEN), as do tests and bench.
    letta_password: str = "local-dev-letta-server-password-0123456789"
    # Letta's own LiteLLM key for embeddings (archival memory): limited to the embedding model, with a budget of
    # its own, never the master key (see create_letta_embedding_key).
    letta_embedding_key: str = "sk-local-dev-letta-embeddings-0123456789"
    letta_embedding_budget: float = 5.0
    embedding_model: str = "text-embedding-3-small"
    service_env: dict[str, str] = field(default_factory=dict)
    letta_env: dict[str, str] = field(default_factory=dict)
    fresh: bool = False

    @property
    def state_dir(self) -> Path:
        return DEVSTACK / "run" / self.name

    @property
    def supabase_url(self) -> str:
        # Where Supabase's API would be; locally the API gateway double: /auth/v1 (GoTrue), /rest/v1 (PostgREST).
        return f"http://127.0.0.1:{self.auth_port}"

    @property
    def service_key(self) -> str:
        return f"local-service-role-key-{self.name}-0123456789"

    @property
    def issuer(self) -> str:
        return f"{self.supabase_url}/auth/v1"

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.service_port}"

    @property
    def litellm_url(self) -> str:
        return f"http://127.0.0.1:{self.litellm_port}"

    @property
    def letta_url(self) -> str:
        return f"http://127.0.0.1:{self.letta_port}"

    @property
    def web_origins(self) -> list[str]:
        ports = [port for port in (self.web_port, self.web_supabase_port) if port]
        return [f"http://{host}:{port}" for port in ports for host in ("127.0.0.1", "localhost")]

    @property
    def function_url(self) -> str:
        return f"http://127.0.0.1:{self.functions_port}/functions/v1/signup-webhook"


class ManagedProcess:
    """A child process with its own log file and process group, so stopping it stops its children."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> None:
        self.name, self.argv, self.env, self.log_path, self.cwd = name, argv, env, log_path, cwd
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_http(url: str, timeout: float, process: ManagedProcess | None = None, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process is not None and not process.is_running():
            raise RuntimeError(f"{process.name} exited during start-up:\n{process.log_tail()}")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code in ok:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    tail = process.log_tail() if process else ""
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s ({last})\n{tail}")


class Stack:
    def __init__(self, config: StackConfig, postgres: LocalPostgres | None = None) -> None:
        self.config = config
        self.state_dir = config.state_dir
        if config.fresh and postgres is None and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._own_postgres = postgres is None
        self.postgres = postgres or LocalPostgres(self.state_dir / "pg", config.pg_port)
        self.signing_key = SigningKey.load_or_create(self.state_dir / "auth-signing-key.pem")
        self.processes: dict[str, ManagedProcess] = {}
        self.letta: LettaServer | None = None

    # -- URLs and settings the tests and `make dev` need -------------------------------------------------
    @property
    def database_url(self) -> str:
        return self.postgres.url("postgres")

    @property
    def letta_database_url(self) -> str:
        return self.postgres.url("letta")

    def service_environment(self) -> dict[str, str]:
        c = self.config
        env = {
            "ENVIRONMENT": "development",
            "LOG_LEVEL": "info",
            "HOST": "127.0.0.1",
            "PORT": str(c.service_port),
            "DATABASE_URL": self.database_url,
            "SUPABASE_URL": c.supabase_url,
            "SUPABASE_SERVICE_KEY": c.service_key,
            "ADMIN_API_KEY": c.admin_api_key,
            "LETTA_BASE_URL": c.letta_url,
            "LETTA_API_TOKEN": c.letta_password,
            "EMBEDDING_MODEL": c.embedding_model,
            "LITELLM_BASE_URL": c.litellm_url,
            "LITELLM_MASTER_KEY": c.master_key,
            "WEBHOOK_SECRET": c.webhook_secret,
            "STANDARD_WEBHOOK_SECRET": c.standard_webhook_secret,
            "CORS_ALLOW_ORIGINS": ",".join(["http://localhost:3000", "http://127.0.0.1:3000", *c.web_origins]),
            "RECONCILE_INTERVAL_SECONDS": "5",
            # The LiteLLM double writes its spend records every second (PROXY_BATCH_WRITE_AT=1, its default):
            # costs settle within seconds here, where a real LiteLLM needs COST_SETTLE_SECONDS' default.
            "COST_SETTLE_SECONDS": "3",
            "COST_RECONCILE_INTERVAL_SECONDS": "1",
            "FEEDBACK_RETRY_INTERVAL_SECONDS": "2",
        }
        env.update(c.service_env)
        return env

    def access_token(self, user_id: Any, **kwargs: Any) -> str:
        return self.signing_key.access_token(user_id, issuer=self.config.issuer, **kwargs)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def _process(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> ManagedProcess:
        process = ManagedProcess(name, argv, env or {}, self.state_dir / "logs" / f"{name}.log", cwd)
        process.start()
        self.processes[name] = process
        return process

    def start_database(self) -> None:
        self.postgres.init()
        if not self.postgres.is_running():
            self.postgres.start()
        self.postgres.create_database("letta", extensions=["vector"])
        apply_migrations(self.database_url, bootstrap=True)
        # A deployer's step on a real project (see README): tell the auth trigger where to send webhooks.
        target = (
            self.config.function_url if self.edge_function_available() else f"{self.config.service_url}/webhooks/auth"
        )
        self.postgres.psql(
            "insert into private.webhook_config (id, url, secret) values (true, "
            f"'{target}', '{self.config.webhook_secret}') "
            "on conflict (id) do update set url = excluded.url, secret = excluded.secret",
            "postgres",
        )

    @staticmethod
    def edge_function_available() -> bool:
        return EDGE_FUNCTION.exists() and DENO.exists()

    def start_litellm(self) -> None:
        c = self.config
        process = self._process(
            "litellm-double",
            [
                str(PYTHON),
                "-m",
                "devstack.doubles.litellm_double",
                "--host",
                "127.0.0.1",
                "--port",
                str(c.litellm_port),
                "--master-key",
                c.master_key,
                "--state-file",
                str(self.state_dir / "litellm.json"),
            ],
        )
        wait_http(f"{c.litellm_url}/health/liveliness", 30, process)

    def create_letta_embedding_key(self) -> None:
        """Letta's embedding key, made as a deployer makes it on a real LiteLLM (README): ``/key/generate`` with
        the master key, limited to the embedding model, with its own monthly budget. Kept when it exists (a
        restarted dev stack): LiteLLM refuses a second key with the same alias."""
        c = self.config
        admin = {"Authorization": f"Bearer {c.master_key}"}
        found = httpx.get(f"{c.litellm_url}/key/info", params={"key": c.letta_embedding_key}, headers=admin)
        if found.status_code == 200:
            return
        if found.status_code != 404:
            found.raise_for_status()
        body = {
            "key": c.letta_embedding_key,
            "key_alias": "letta-embeddings",
            "models": [self.service_environment()["EMBEDDING_MODEL"]],
            "max_budget": c.letta_embedding_budget,
            "budget_duration": "30d",
            "key_type": "llm_api",
            "metadata": {"purpose": "Letta server: archival memory embeddings"},
        }
        httpx.post(f"{c.litellm_url}/key/generate", json=body, headers=admin).raise_for_status()

    def start_letta(self) -> None:
        c = self.config
        migrate_letta(self.letta_database_url)
        self.letta = LettaServer(
            port=c.letta_port,
            pg_url=self.letta_database_url,
            log_path=self.state_dir / "logs" / "letta.log",
            encryption_key=c.letta_encryption_key,
            # Letta's embedding calls use this global key, not the per-user provider key: archival
            # memory embeddings are billed to the platform (see README), on a key that can do nothing else.
            openai_api_key=c.letta_embedding_key,
            password=c.letta_password,
            env_extra={
                "OPENAI_BASE_URL": f"{c.litellm_url}/v1",
                # Letta 0.16.8 defaults to no database pool (one connection per session): ~100 concurrent
                # turns exhaust Postgres ("too many clients") and turns fail half-way. Bound it.
                "LETTA_DISABLE_SQLALCHEMY_POOLING": "false",
                "LETTA_PG_POOL_SIZE": "20",
                "LETTA_PG_MAX_OVERFLOW": "20",
                "LETTA_PG_POOL_TIMEOUT": "120",
                # With its pool on, Letta forces SSL unless the URI names a mode; local Postgres has no SSL.
                "LETTA_PG_URI": f"{self.letta_database_url}?sslmode=disable",
                **c.letta_env,
            },
        )
        self.letta.start()

    def wait_letta(self) -> None:
        assert self.letta is not None
        self.letta.wait_healthy(timeout=120)

    def start_supabase_api(self) -> None:
        """The API gateway double on SUPABASE_URL, with the GoTrue and PostgREST doubles behind it."""
        c = self.config
        process = self._process(
            "supabase-api",
            [
                str(PYTHON),
                "-m",
                "devstack.doubles.api_gateway",
                "--port",
                str(c.auth_port),
                "--db-url",
                self.database_url,
                "--service-key",
                c.service_key,
                "--signing-key",
                str(self.state_dir / "auth-signing-key.pem"),
                "--issuer",
                c.issuer,
                "--publishable-key",
                c.publishable_key,
            ],
        )
        wait_http(f"{c.supabase_url}/auth/v1/health", 30, process)

    def start_relay(self) -> None:
        self._process("pgnet-relay", [str(PYTHON), "-m", "devstack.doubles.pgnet_relay", "--db-url", self.database_url])

    def start_edge_function(self) -> None:
        if not self.edge_function_available():
            return
        c = self.config
        process = self._process(
            "edge-function",
            [
                str(DENO),
                "serve",
                "--config",
                str(EDGE_FUNCTION.parent / "deno.json"),
                "--allow-env",
                "--allow-net",
                "--port",
                str(c.functions_port),
                str(EDGE_FUNCTION),
            ],
            {
                "DENO_DIR": str(DENO_DIR),
                "SERVICE_WEBHOOK_URL": f"{c.service_url}/webhooks/auth",
                "WEBHOOK_SECRET": c.webhook_secret,
                "STANDARD_WEBHOOK_SECRET": c.standard_webhook_secret,
                "DENO_NO_UPDATE_CHECK": "1",
            },
        )
        wait_http(f"http://127.0.0.1:{c.functions_port}/functions/v1/health", 30, process, ok=(200, 404, 405))

    def start_web(self) -> None:
        """The web client built for this stack's URLs and served by ``vite preview``: on ``web_port`` reading threads,
        history and search through the service, on ``web_supabase_port`` with supabase-js through the PostgREST
        double. Both sign in with the GoTrue double and write through the service."""
        c = self.config
        for name, port, read_from in (("web", c.web_port, "api"), ("web-supabase", c.web_supabase_port, "supabase")):
            if port is None:
                continue
            out_dir = self.state_dir / name
            web.build(
                out_dir,
                {
                    "VITE_API_URL": c.service_url,
                    "VITE_SUPABASE_URL": c.supabase_url,
                    "VITE_SUPABASE_PUBLISHABLE_KEY": c.publishable_key,
                    "VITE_READ_FROM": read_from,
                },
            )
            process = self._process(name, web.preview_argv(out_dir, port), cwd=web.WEB)
            wait_http(f"http://127.0.0.1:{port}/", 30, process)

    def start_service(self) -> None:
        process = self._process("service", [str(PYTHON), "-m", "service"], self.service_environment())
        wait_http(f"{self.config.service_url}/health/live", 30, process)

    def start_replica(self, name: str, port: int, **env: str) -> str:
        """Another service process on the same stack (what a second replica behind a load balancer is), with
        ``env`` over the service's environment; its URL. Stopped with the stack, or with ``stop_replica``."""
        env = {**self.service_environment(), "PORT": str(port), **env}
        process = self._process(name, [str(PYTHON), "-m", "service"], env)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/live", 30, process)
        return url

    def stop_replica(self, name: str) -> None:
        self.processes.pop(name).stop()

    def up(self) -> Stack:
        # What `python -m devstack.create_user --stack <name>` needs to sign up a user on this stack.
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "stack.json").write_text(
            json.dumps(
                {
                    "issuer": self.config.issuer,
                    "database_url": self.database_url,
                    "service_url": self.config.service_url,
                }
            )
        )
        try:
            self.start_database()
            # Letta lists the models its key may call when it starts: its key must exist by then.
            self.start_litellm()
            self.create_letta_embedding_key()
            self.start_letta()  # slowest to boot: wait for it last
            self.start_supabase_api()
            self.start_relay()
            self.start_edge_function()
            self.start_web()  # built while Letta boots
            self.wait_letta()
            self.start_service()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()
        self.processes.clear()
        if self.letta is not None:
            self.letta.stop()
            self.letta = None
        if self._own_postgres and self.postgres.is_running():
            self.postgres.stop()

    def kill_service(self) -> None:
        """SIGKILL the service (its whole process group), as a crash or an OOM kill would: nothing runs on exit."""
        process = self.processes.pop("service")
        if process.process is not None and process.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.process.pid, signal.SIGKILL)
            process.process.wait()
        process.stop()  # closes its log

    def restart_service(self, **env: str) -> None:
        self.processes.pop("service").stop()
        self.config.service_env.update(env)
        self.start_service()


def _print_banner(stack: Stack) -> None:
    c = stack.config
    print(
        f"""
ai-chat-backend is running (Ctrl-C stops everything)

  web client     http://127.0.0.1:{c.web_port}        (examples/web: create an account there and chat)
                 http://127.0.0.1:{c.web_supabase_port}        (the same, reading with supabase-js via /rest/v1)
  service        {c.service_url}        (OpenAPI: {c.service_url}/schema)
  Postgres       {stack.database_url}
  Letta          {c.letta_url}   (password {c.letta_password})
  LiteLLM double {c.litellm_url}   (master key {c.master_key})
  GoTrue double  {c.supabase_url}/auth/v1   (JWKS, sign-in with a password, admin user deletion)
  PostgREST double {c.supabase_url}/rest/v1 (supabase-js reads under RLS; apikey {c.publishable_key})
  Edge Function  {c.function_url}
  logs           {stack.state_dir / "logs"}

Create a user the way Supabase Auth does and get an access token:
  TOKEN=$(.venv/bin/python -m devstack.create_user --email ann@example.com --name Ann)

Then:
  curl -s {c.service_url}/api/v1/auth/me -H "Authorization: Bearer $TOKEN"
  curl -N {c.service_url}/api/v1/chat/message -H "Authorization: Bearer $TOKEN" \\
       -H 'Content-Type: application/json' -H 'Accept: text/event-stream' \\
       -d '{{"content": "remember that my cat is Miso"}}'
""",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--fresh", action="store_true", help="delete the dev stack's data first")
    args = parser.parse_args()
    stack = Stack(StackConfig(fresh=args.fresh, web_port=5173, web_supabase_port=5174))
    started = time.monotonic()
    stack.up()
    _print_banner(stack)
    print(f"up in {time.monotonic() - started:.1f}s", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop:
            for process in stack.processes.values():
                if not process.is_running():
                    print(f"{process.name} exited:\n{process.log_tail()}", file=sys.stderr)
                    stop = True
            time.sleep(0.5)
    finally:
        print("stopping...", flush=True)
        stack.down()


if __name__ == "__main__":
    main()
