"""Delivery half of the local pg_net stand-in (see devstack/supabase_bootstrap.sql).

``net.http_post`` only stores a request in ``net.http_request_queue`` and NOTIFYs
``net_http_request`` at COMMIT. This relay LISTENs on that channel (and polls every second, so a
missed notification only delays a request), claims due rows with ``FOR UPDATE SKIP LOCKED`` (several
relays may run against one database), sends them with httpx and records the outcome in
``net._http_response`` and on the queue row.

Outcome rules: 2xx and other 4xx responses are final (a webhook receiver that rejects a request
will reject it again); 5xx, 408, 429, timeouts and connection errors are retried with exponential
backoff up to ``max_attempts``. Real pg_net makes a single attempt: the retries are a local
convenience, and the service's reconciler is what makes a lost webhook harmless.

    python -m devstack.doubles.pgnet_relay --db-url postgresql://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
from dataclasses import dataclass

import asyncpg
import httpx

log = logging.getLogger("devstack.doubles.pgnet_relay")

CHANNEL = "net_http_request"
_RETRYABLE_STATUS = frozenset({408, 429})
_MAX_STORED_CONTENT = 64 * 1024
# Extra lease beyond the request timeout before a claimed, unfinished row is due again (a relay
# that died mid-request).
_LEASE_MARGIN_SECONDS = 30.0
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

_CLAIM_SQL = """
with due as (
  select id from net.http_request_queue
  where delivered_at is null and attempts < $1 and next_attempt_at <= now()
  order by next_attempt_at, id
  limit $2
  for update skip locked
)
update net.http_request_queue as q
set attempts = q.attempts + 1,
    next_attempt_at = now() + make_interval(secs => q.timeout_milliseconds / 1000.0 + $3)
from due
where q.id = due.id
returning q.id, q.method, q.url, q.headers, q.body, q.timeout_milliseconds, q.attempts
"""

_RECORD_RESPONSE_SQL = """
insert into net._http_response (id, status_code, content_type, headers, content, timed_out, error_msg, created)
values ($1, $2, $3, $4::jsonb, $5, $6, $7, now())
on conflict (id) do update set
  status_code = excluded.status_code, content_type = excluded.content_type, headers = excluded.headers,
  content = excluded.content, timed_out = excluded.timed_out, error_msg = excluded.error_msg,
  created = excluded.created
"""

_MARK_DELIVERED_SQL = """
update net.http_request_queue
set delivered_at = now(), last_status = $2, last_error = null
where id = $1
"""

_MARK_RETRY_SQL = """
update net.http_request_queue
set next_attempt_at = now() + make_interval(secs => $2), last_status = $3, last_error = $4
where id = $1
"""


@dataclass(frozen=True, slots=True)
class RelaySettings:
    max_attempts: int = 5
    poll_interval: float = 1.0
    base_backoff: float = 1.0
    max_backoff: float = 60.0
    concurrency: int = 8


@dataclass(frozen=True, slots=True)
class _Request:
    id: int
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    timeout: float
    attempt: int


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: int | None
    content_type: str | None
    headers: dict[str, str]
    content: str | None
    timed_out: bool
    error: str | None

    @property
    def final(self) -> bool:
        if self.status is None:
            return False
        return self.status < 500 and self.status not in _RETRYABLE_STATUS


def _backoff(settings: RelaySettings, attempt: int) -> float:
    delay: float = min(settings.max_backoff, settings.base_backoff * 2 ** (attempt - 1))
    return delay * random.uniform(0.9, 1.1)


def _to_request(row: asyncpg.Record) -> _Request:
    headers = row["headers"] or {}
    if isinstance(headers, str):  # jsonb arrives as text unless a codec is set
        headers = json.loads(headers)
    return _Request(
        id=row["id"],
        method=str(row["method"]).upper(),
        url=row["url"],
        headers={str(k): str(v) for k, v in headers.items()},
        body=row["body"],
        timeout=max(row["timeout_milliseconds"], 1) / 1000.0,
        attempt=row["attempts"],
    )


async def _send(client: httpx.AsyncClient, request: _Request) -> _Outcome:
    try:
        response = await client.request(
            request.method,
            request.url,
            headers=request.headers,
            content=request.body,
            timeout=request.timeout,
        )
    except httpx.TimeoutException as exc:
        return _Outcome(None, None, {}, None, True, f"Timeout was reached: {exc!r}")
    except httpx.HTTPError as exc:
        return _Outcome(None, None, {}, None, False, f"{type(exc).__name__}: {exc}")
    return _Outcome(
        status=response.status_code,
        content_type=response.headers.get("content-type"),
        headers=dict(response.headers),
        content=response.text[:_MAX_STORED_CONTENT],
        timed_out=False,
        error=None,
    )


async def _record(pool: asyncpg.Pool, settings: RelaySettings, request: _Request, outcome: _Outcome) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            _RECORD_RESPONSE_SQL,
            request.id,
            outcome.status,
            outcome.content_type,
            json.dumps(outcome.headers),
            outcome.content,
            outcome.timed_out,
            outcome.error,
        )
        if outcome.final:
            await conn.execute(_MARK_DELIVERED_SQL, request.id, outcome.status)
        else:
            error = outcome.error or f"HTTP {outcome.status}"
            await conn.execute(_MARK_RETRY_SQL, request.id, _backoff(settings, request.attempt), outcome.status, error)
    if outcome.final:
        log.info("request %d: %s %s -> %s", request.id, request.method, request.url, outcome.status)
    elif request.attempt >= settings.max_attempts:
        log.warning(
            "request %d: giving up after %d attempts (%s)",
            request.id,
            request.attempt,
            outcome.error or outcome.status,
        )
    else:
        log.info(
            "request %d: attempt %d failed (%s), will retry",
            request.id,
            request.attempt,
            outcome.error or outcome.status,
        )


async def _deliver(
    pool: asyncpg.Pool,
    client: httpx.AsyncClient,
    settings: RelaySettings,
    request: _Request,
    wake: asyncio.Event,
) -> None:
    try:
        outcome = await _send(client, request)
        await _record(pool, settings, request, outcome)
    except Exception:
        # The row stays claimed until its lease ends, then it is retried.
        log.exception("request %d: could not record the outcome", request.id)
    finally:
        wake.set()  # a slot is free: look for more work


async def _listen(db_url: str, wake: asyncio.Event) -> asyncpg.Connection | None:
    try:
        conn = await asyncpg.connect(db_url)
        await conn.add_listener(CHANNEL, lambda *_: wake.set())
        return conn
    except _DB_ERRORS as exc:
        log.warning("LISTEN %s failed (%s); polling only", CHANNEL, exc)
        return None


async def run_relay(
    db_url: str,
    stop_event: asyncio.Event,
    settings: RelaySettings | None = None,
    client: httpx.AsyncClient | None = None,
) -> None:
    """Deliver queued pg_net requests until ``stop_event`` is set, then wait for in-flight ones."""
    settings = settings or RelaySettings()
    own_client = client is None
    # trust_env=False: local receivers must not be routed through an HTTP(S)_PROXY from the env.
    http = client or httpx.AsyncClient(trust_env=False, follow_redirects=False)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    wake = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    listener = await _listen(db_url, wake)
    try:
        while not stop_event.is_set():
            wake.clear()
            if listener is None or listener.is_closed():
                listener = await _listen(db_url, wake)
            free = settings.concurrency - len(tasks)
            rows: list[asyncpg.Record] = []
            if free > 0:
                try:
                    rows = await pool.fetch(_CLAIM_SQL, settings.max_attempts, free, _LEASE_MARGIN_SECONDS)
                except _DB_ERRORS as exc:
                    log.warning("claiming requests failed: %s", exc)
            for row in rows:
                task = asyncio.create_task(_deliver(pool, http, settings, _to_request(row), wake))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if rows and len(rows) == free:
                continue  # there may be more due right now
            stop_wait = asyncio.ensure_future(stop_event.wait())
            wake_wait = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait(
                    {stop_wait, wake_wait},
                    timeout=settings.poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                stop_wait.cancel()
                wake_wait.cancel()
    finally:
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if listener is not None and not listener.is_closed():
            await listener.close()
        await pool.close()
        if own_client:
            await http.aclose()


def _settings_from_args(args: argparse.Namespace) -> RelaySettings:
    return RelaySettings(
        max_attempts=args.max_attempts,
        poll_interval=args.poll_interval,
        base_backoff=args.base_backoff,
        max_backoff=args.max_backoff,
    )


async def _main(db_url: str, settings: RelaySettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    log.info("relaying pg_net requests (LISTEN %s)", CHANNEL)
    await run_relay(db_url, stop, settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.doubles.pgnet_relay",
        description="Deliver requests queued by the local pg_net stand-in (net.http_post).",
    )
    parser.add_argument("--db-url", default=os.environ.get("DATABASE_URL"), help="default: $DATABASE_URL")
    defaults = RelaySettings()
    parser.add_argument("--max-attempts", type=int, default=defaults.max_attempts)
    parser.add_argument("--poll-interval", type=float, default=defaults.poll_interval)
    parser.add_argument("--base-backoff", type=float, default=defaults.base_backoff)
    parser.add_argument("--max-backoff", type=float, default=defaults.max_backoff)
    args = parser.parse_args(argv)
    if not args.db_url:
        parser.error("--db-url is required (or set DATABASE_URL)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(args.db_url, _settings_from_args(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
