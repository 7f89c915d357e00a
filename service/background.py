"""Work beside the requests.

The loops every replica runs (provisioning's reconciler, turn recovery, cost reconciliation): one way to run
them, a pass every interval, jittered so replicas do not run in lockstep, a pass that fails on the database or an
upstream logged and tried again at the next one, a prompt stop at shutdown. And work a request starts and does not
wait for (``Detached``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncpg

from service.clients.errors import UpstreamError
from service.db import DATABASE_UNAVAILABLE

T = TypeVar("T")

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


class Detached:
    """Work a request starts and does not wait for (a call's record, a thread's title, feedback sent to Letta):
    referenced while it runs (asyncio keeps only weak references to tasks), its exception retrieved when no one
    awaits it (the work logs its own failures), and given ``drain``'s grace at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()

    async def drain(self, grace_seconds: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_seconds)
