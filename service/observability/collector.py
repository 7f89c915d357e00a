"""What a scrape reads at the moment it is made: the state of this replica (sockets, connections, the database pool) and
of the whole system, from one bounded query (provisioning by state, live leases, costs not reconciled yet, feedback
Letta does not have). Rendered with the event metrics of ``service.observability.metrics`` by ``scrape``.

The query runs before the registry is rendered (a Prometheus collector is synchronous) and is given
``SCRAPE_DB_TIMEOUT_SECONDS``, pool wait included: a slow or unreachable database costs a scrape that long at most,
and the scrape still answers, with ``aichat_metrics_database_up 0`` and without the database's gauges. The query
reads partial indexes (profiles not active, costs not final, feedback unsent) and the lease table (a row per user who
chatted). Scrapes at once share one query, and a scrape within ``SNAPSHOT_MAX_AGE_SECONDS`` of the last reuses its
answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Sized
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from service.chat.websocket import OPEN_SOCKETS
from service.db import Database
from service.observability.metrics import REGISTRY
from service.settings import Settings

logger = logging.getLogger("service.metrics")

SCRAPE_DB_TIMEOUT_SECONDS = 2.0
SNAPSHOT_MAX_AGE_SECONDS = 1.0
PROVISIONING_STATES = ("pending", "provisioning", "failed")  # every state but active (which is every other user)
COST_KINDS = ("turn", "llm_call")

# $1: COST_SETTLE_SECONDS (a cost is not due for reconciliation before).
SYSTEM_STATE = """
    select
        (select coalesce(jsonb_object_agg(agent_status, jsonb_build_array(profiles, attempts)), '{}')::text
         from (select agent_status, count(*) as profiles, sum(provisioning_attempts) as attempts
               from public.user_profiles where agent_status <> 'active' group by agent_status) s
        ) as provisioning,
        (select coalesce(extract(epoch from now() - min(next_provisioning_at)), 0)::float8
         from public.user_profiles
         where agent_status <> 'active' and next_provisioning_at <= now()
           and (provisioning_claimed_until is null or provisioning_claimed_until < now())
        ) as provisioning_lag,
        (select count(*) from private.chat_turn_leases where expires_at > now()) as leases,
        (select jsonb_build_object(
            'turn', (select jsonb_build_array(count(*), coalesce(sum(cost), 0)) from public.messages
                     where cost_final = false),
            'llm_call', (select jsonb_build_array(count(*), coalesce(sum(cost), 0)) from public.llm_calls
                         where cost_final = false))::text
        ) as cost,
        (select jsonb_build_array(count(*) filter (where letta_retry_at < 'infinity'),
                                  count(*) filter (where letta_retry_at = 'infinity'))::text
         from public.message_feedback where letta_sent_at is null
        ) as feedback_unsent,
        (select greatest(0, coalesce(extract(epoch from now() - min(created_at)), 0) - $1)::float8
         from (select min(created_at) as created_at from public.messages where cost_final = false
               union all
               select min(created_at) from public.llm_calls where cost_final = false) oldest
        ) as cost_lag
"""

_server_connections: Sized | None = None  # uvicorn's set of open connections, once it serves (service.web.server)


def watch_server_connections(connections: Sized) -> None:
    """Count ``connections`` (uvicorn's, shared by every connection of the server) in each scrape."""
    global _server_connections
    _server_connections = connections


@dataclass
class Snapshot:
    """What the last scrape read; ``system`` is None when the database did not answer in time."""

    pool: Database | None = None
    system: dict[str, Any] | None = None
    query_seconds: float = 0.0
    taken: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self, db: Database, settings: Settings) -> None:
        if self.pool is db and time.monotonic() - self.taken < SNAPSHOT_MAX_AGE_SECONDS:
            return
        self.pool = db
        started = time.perf_counter()
        try:
            async with asyncio.timeout(SCRAPE_DB_TIMEOUT_SECONDS):
                row = await db.fetchrow(SYSTEM_STATE, settings.cost_settle_seconds)
            assert row is not None  # one row, always
            # JSON as text: read the same whatever codecs the pool's connections have.
            self.system = {
                **row,
                "provisioning": json.loads(row["provisioning"]),
                "cost": json.loads(row["cost"]),
                "feedback_unsent": json.loads(row["feedback_unsent"]),
            }
        except Exception as exc:  # a scrape says the database is down instead of failing
            logger.warning("metrics: the database did not answer", extra={"error": repr(exc)})
            self.system = None
        self.query_seconds = time.perf_counter() - started
        self.taken = time.monotonic()


class SnapshotCollector(Collector):
    """The gauges of the last ``Snapshot``, and this replica's sockets and connections."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterable[Metric]:
        yield _gauge("aichat_websockets_open", "Chat WebSockets open on this replica.", OPEN_SOCKETS.total)
        if _server_connections is not None:
            yield _gauge(
                "aichat_server_connections_open",
                "Client connections open to this replica (HTTP, SSE and WebSocket), against SERVER_MAX_CONNECTIONS.",
                len(_server_connections),
            )
        snapshot = self.snapshot
        if snapshot.pool is not None:
            pool = snapshot.pool
            in_use = pool.get_size() - pool.get_idle_size()
            connections = GaugeMetricFamily(
                "aichat_db_pool_connections",
                "This replica's Postgres pool: connections in use and idle.",
                labels=["state"],
            )
            connections.add_metric(["in_use"], in_use)
            connections.add_metric(["idle"], pool.get_idle_size())
            yield connections
            yield _gauge(
                "aichat_db_pool_max_connections", "The pool's size limit (DATABASE_POOL_MAX).", pool.get_max_size()
            )
        yield _gauge(
            "aichat_metrics_database_up",
            "1 if this scrape's database query answered in time (the gauges read from the database are present).",
            1 if snapshot.system is not None else 0,
        )
        yield _gauge(
            "aichat_metrics_database_query_seconds",
            "How long this scrape's database query took (or waited, up to its timeout).",
            snapshot.query_seconds,
        )
        if snapshot.system is not None:
            yield from _system_gauges(snapshot.system)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _system_gauges(system: dict[str, Any]) -> Iterable[Metric]:
    """The database's gauges: the same from every replica (aggregate them with max, not sum)."""
    provisioning: dict[str, list[float]] = system["provisioning"]
    profiles = GaugeMetricFamily(
        "aichat_provisioning_profiles", "Profiles whose agent is not active yet, by state.", labels=["state"]
    )
    attempts = GaugeMetricFamily(
        "aichat_provisioning_attempts",
        "Provisioning attempts made so far by the profiles in each state (divided by their number: the mean).",
        labels=["state"],
    )
    for state in PROVISIONING_STATES:
        count, made = provisioning.get(state, (0, 0))
        profiles.add_metric([state], count)
        attempts.add_metric([state], made or 0)
    yield profiles
    yield attempts
    yield _gauge(
        "aichat_provisioning_lag_seconds",
        "How long the most overdue profile has waited past its next scheduled attempt (0: the reconciler keeps up).",
        system["provisioning_lag"],
    )
    yield _gauge(
        "aichat_chat_leases_live",
        "Users with a turn (or an agent reset) running now, on any replica: the live per-user leases.",
        system["leases"],
    )
    cost: dict[str, list[float]] = system["cost"]
    items = GaugeMetricFamily(
        "aichat_cost_unreconciled",
        "Turns and LLM proxy calls whose cost is still the estimate (not yet replaced by what LiteLLM charged).",
        labels=["kind"],
    )
    usd = GaugeMetricFamily(
        "aichat_cost_unreconciled_usd", "The sum of those estimates, in US dollars.", labels=["kind"]
    )
    for kind in COST_KINDS:
        count, amount = cost.get(kind) or (0, 0)
        items.add_metric([kind], count)
        usd.add_metric([kind], float(amount))
    yield items
    yield usd
    waiting, given_up = system["feedback_unsent"]
    feedback = GaugeMetricFamily(
        "aichat_feedback_unsent",
        "Feedback Letta does not have: waiting for a retry, or given up after its last attempt (kept here only).",
        labels=["state"],
    )
    feedback.add_metric(["waiting"], waiting)
    feedback.add_metric(["given_up"], given_up)
    yield feedback
    yield _gauge(
        "aichat_cost_reconcile_lag_seconds",
        "How far past COST_SETTLE_SECONDS the oldest estimate still waits for reconciliation (0: none waits).",
        system["cost_lag"],
    )


COLLECTOR = SnapshotCollector()
REGISTRY.register(COLLECTOR)


async def scrape(db: Database, settings: Settings) -> bytes:
    """The metrics in Prometheus's text format, the database's state read first."""
    async with COLLECTOR.snapshot.lock:
        await COLLECTOR.snapshot.refresh(db, settings)
        return generate_latest(REGISTRY)


__all__ = ["SYSTEM_STATE", "scrape", "watch_server_connections"]
