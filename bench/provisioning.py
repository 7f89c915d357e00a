"""Provisioning benchmark: signup-to-active latency and webhook acknowledgement time.

1. ``--users`` GoTrue-shaped signups, one after another, each through the real path: INSERT + UPDATE on
   ``auth.users`` in one transaction -> our trigger -> the pg_net stand-in's queue -> the relay -> the
   signup-webhook Edge Function (Deno) -> ``POST /webhooks/auth`` on the service -> background provisioning
   (LiteLLM user + key, Letta provider, Letta agent). Latency = commit of the signup transaction to the poll
   (every 20 ms) that first sees ``user_profiles.agent_status = 'active'``. Then ``--burst`` users signed up
   at the same moment, same measurement.
2. Webhook acknowledgement: ``--posts`` signed Standard Webhooks requests (for the users above, who are
   already active) POSTed straight to the service's ``/webhooks/auth``; time to the 202, sequentially and
   with ``--concurrency`` in flight.

    .venv/bin/python -m bench.provisioning [--users 30] [--burst 10] [--posts 200] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from bench.common import (
    LATENCY_HEADERS,
    ActiveWatcher,
    BenchUser,
    banner,
    cpu_seconds,
    entry_point,
    latency_row,
    ms,
    print_table,
    running_stack,
    service_pid,
    sign_up_user,
)
from devstack.stack import Stack
from devstack.standard_webhooks import sign_standard_webhook

POLL_INTERVAL = 0.02
ACTIVE_TIMEOUT = 120.0

_DELIVERY = """
select extract(epoch from q.delivered_at - q.created_at) as delivered,
       extract(epoch from p.updated_at - q.created_at) as active,
       q.attempts, q.last_status
from net.http_request_queue q
join public.user_profiles p on p.id = $1
where convert_from(q.body, 'UTF8')::jsonb -> 'record' ->> 'id' = $1::text
order by q.id limit 1
"""


@dataclass
class SignupFigures:
    latencies: list[float] = field(default_factory=list)
    delivered: list[float] = field(default_factory=list)  # DB clock: signup transaction -> relay had the 202
    active_db: list[float] = field(default_factory=list)  # DB clock: signup transaction -> the 'active' update
    failed: list[str] = field(default_factory=list)
    wall: float = 0.0


async def _record(pool: asyncpg.Pool[Any], user: BenchUser, figures: SignupFigures) -> None:
    assert user.active_at is not None
    figures.latencies.append(user.active_at - user.signed_up_at)
    row = await pool.fetchrow(_DELIVERY, user.id)
    if row is not None and row["delivered"] is not None:
        figures.delivered.append(float(row["delivered"]))
        figures.active_db.append(float(row["active"]))


async def signups(
    stack: Stack, pool: asyncpg.Pool[Any], count: int, *, at_once: bool
) -> tuple[list[BenchUser], SignupFigures]:
    """``count`` signups, one after another (each waits for 'active') or all at the same moment."""
    watcher = ActiveWatcher(pool, interval=POLL_INTERVAL)
    figures = SignupFigures()
    users: list[BenchUser] = []
    started = time.perf_counter()
    try:
        if at_once:
            users = list(await asyncio.gather(*(sign_up_user(stack, f"Burst {i}") for i in range(count))))
            for user in users:
                watcher.watch(user)
            await watcher.wait(users, ACTIVE_TIMEOUT)
        else:
            for index in range(count):
                user = await sign_up_user(stack, f"Seq {index}")
                users.append(user)
                watcher.watch(user)
                await watcher.wait([user], ACTIVE_TIMEOUT)
    finally:
        await watcher.close()
    figures.wall = time.perf_counter() - started
    for user in users:
        if user.active_at is None:
            figures.failed.append(f"{user.id}: {watcher.statuses.get(user.id)}")
        else:
            await _record(pool, user, figures)
    return users, figures


# -- webhook acknowledgement -------------------------------------------------------------------------------
def signed_request(secret: str, user_id: uuid.UUID) -> tuple[bytes, dict[str, str]]:
    """An auth.users INSERT event signed the way the Edge Function signs it (Standard Webhooks)."""
    body = json.dumps(
        {"type": "INSERT", "table": "users", "schema": "auth", "record": {"id": str(user_id)}, "old_record": None}
    ).encode()
    message_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard_webhook(secret, message_id, timestamp, body),
    }
    return body, headers


@dataclass
class WebhookFigures:
    latencies: list[float]
    wall: float
    statuses: dict[int, int]
    cpu: float  # service CPU seconds, including the (no-op) background provisioning each webhook schedules


async def post_webhooks(stack: Stack, users: list[BenchUser], posts: int, concurrency: int) -> WebhookFigures:
    """``posts`` signed webhooks with ``concurrency`` in flight."""
    url = f"{stack.config.service_url}/webhooks/auth"
    secret = stack.config.standard_webhook_secret
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(posts))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:

        async def worker() -> None:
            for index in counter:
                body, headers = signed_request(secret, users[index % len(users)].id)
                started = time.perf_counter()
                response = await http.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        # Warm the connections first, so the figures are not about TCP handshakes.
        for user in users[:concurrency]:
            body, headers = signed_request(secret, user.id)
            await http.post(url, content=body, headers=headers)
        await asyncio.sleep(0.5)  # let the background no-op provisioning of the warm-up finish
        pid = service_pid(stack)
        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        await asyncio.sleep(0.3)  # the background work the last webhooks scheduled
        cpu = cpu_seconds(pid) - cpu_before
    return WebhookFigures(latencies, wall, statuses, cpu)


# -- the run ------------------------------------------------------------------------------------------------
async def run(stack: Stack, users_count: int, burst: int, posts: int, concurrency: int) -> None:
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
    try:
        # One throw-away signup first: the first request through Deno, the service and Letta warms them.
        await signups(stack, pool, 1, at_once=False)

        print(f"\n{users_count} signups, one after another ...", flush=True)
        cpu_before = cpu_seconds(service_pid(stack))
        users, sequential = await signups(stack, pool, users_count, at_once=False)
        provisioning_cpu = cpu_seconds(service_pid(stack)) - cpu_before
        rows = [
            latency_row("signup commit -> profile active (poll 20 ms)", sequential.latencies),
            latency_row("  of which: commit -> relay got the 202 (DB clock)", sequential.delivered),
            latency_row("  commit -> 'active' written (DB clock)", sequential.active_db),
        ]
        burst_figures = None
        if burst > 0:
            print(f"{burst} signups at the same moment ...", flush=True)
            burst_users, burst_figures = await signups(stack, pool, burst, at_once=True)
            users += burst_users
            rows += [
                latency_row(f"burst of {burst}: commit -> active (poll 20 ms)", burst_figures.latencies),
                latency_row("  of which: commit -> relay got the 202 (DB clock)", burst_figures.delivered),
            ]
        print_table(
            "Signup -> active (trigger -> pg_net stand-in -> relay -> Edge Function -> service)", LATENCY_HEADERS, rows
        )
        print(
            f"sequential: {users_count} users in {sequential.wall:.1f}s; not active: {len(sequential.failed)}; "
            f"service CPU {ms(provisioning_cpu / users_count)} per provisioned user"
        )
        if burst_figures is not None:
            print(
                f"burst: {burst} users active in {burst_figures.wall:.1f}s "
                f"({burst / burst_figures.wall:.2f} users/s); not active: {len(burst_figures.failed)}"
            )
        for failure in (sequential.failed + (burst_figures.failed if burst_figures else []))[:10]:
            print(f"  NOT ACTIVE {failure}")

        active = [u for u in users if u.active_at is not None]
        if not active:
            raise RuntimeError("no user became active: cannot post webhooks for them")
        print(f"\n{posts} signed webhooks straight to /webhooks/auth ...", flush=True)
        seq = await post_webhooks(stack, active, posts, 1)
        par = await post_webhooks(stack, active, posts, concurrency)
        print_table(
            "Webhook acknowledgement (signed Standard Webhooks POST -> 202)",
            [*LATENCY_HEADERS, "posts/s", "service CPU/post"],
            [
                [*latency_row(label, f.latencies), f"{len(f.latencies) / f.wall:.0f}", ms(f.cpu / len(f.latencies))]
                for label, f in (("sequential", seq), (f"{concurrency} concurrent", par))
            ],
        )
        print(f"status codes: sequential {seq.statuses}, concurrent {par.statuses}")
    finally:
        await pool.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=30, help="sequential signups (default 30)")
    parser.add_argument("--burst", type=int, default=10, help="signups at the same moment (default 10, 0 = none)")
    parser.add_argument("--posts", type=int, default=200, help="webhook POSTs per mode (default 200)")
    parser.add_argument("--concurrency", type=int, default=20, help="webhook POSTs in flight (default 20)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, stack: Stack | None = None) -> None:
    args = parse_args(argv)
    banner("provisioning benchmark")
    if stack is not None:
        asyncio.run(run(stack, args.users, args.burst, args.posts, args.concurrency))
        return
    with running_stack() as own:
        asyncio.run(run(own, args.users, args.burst, args.posts, args.concurrency))


if __name__ == "__main__":
    entry_point(main)
