"""Retries with exponential backoff and full jitter, for transient upstream errors only.

4xx answers are final (retrying a bad request cannot help); timeouts, 5xx and refused connections
are retried. Full jitter keeps a crowd of retrying replicas from arriving in lockstep.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.clients.base import UpstreamError

T = TypeVar("T")


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Full-jitter delay before retry number ``attempt`` (1-based)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))  # noqa: S311 - jitter, not crypto


async def with_retries(
    operation: Callable[[], Awaitable[T]], *, attempts: int = 3, base: float = 0.25, cap: float = 2.0
) -> T:
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except UpstreamError as exc:
            if not exc.transient or attempt == attempts:
                raise
            await asyncio.sleep(backoff_delay(attempt, base, cap))
    raise AssertionError("unreachable")
