"""The loops every replica runs beside the requests: provisioning's reconciler, turn recovery, cost
reconciliation. One way to run them: a pass every interval, jittered so replicas do not run in lockstep, a pass
that fails on the database or an upstream logged and tried again at the next one, a prompt stop at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from service.clients.errors import UpstreamError
from service.db import DATABASE_UNAVAILABLE

# What may fail one pass without ending the loop (the next pass tries again).
PASS_FAILURES: tuple[type[BaseException], ...] = (asyncpg.PostgresError, UpstreamError, *DATABASE_UNAVAILABLE)


async def every(
    interval: float, stop: asyncio.Event, work: Callable[[], Awaitable[Any]], logger: logging.Logger, what: str
) -> None:
    """Run ``work`` every ``interval`` seconds (± 20 %) until ``stop`` is set."""
    while not stop.is_set():
        try:
            await work()
        except PASS_FAILURES as exc:
            logger.warning(f"{what} pass failed", extra={"error": repr(exc)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
