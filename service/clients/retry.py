"""Retries with exponential backoff and jitter, for transient upstream errors only.

4xx answers are final (retrying a bad request cannot help); timeouts, 5xx and refused connections are
retried (``UpstreamError.transient``). Jitter keeps a crowd of retrying replicas from arriving in lockstep.
``backoff_delay`` is also the provisioning schedule's delay between attempts.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.clients.errors import UpstreamError

T = TypeVar("T")


def backoff_delay(attempt: int, base: float, cap: float, *, floor: float = 0.0) -> float:
    """The delay before retry number ``attempt`` (1-based): ``base * 2^(attempt-1)`` capped at ``cap``, times a
    random factor in ``[floor, 1]`` (``floor=0`` is full jitter)."""
    ceiling: float = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return ceiling * random.uniform(floor, 1.0)  # noqa: S311 - jitter, not crypto


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
