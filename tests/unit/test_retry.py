from __future__ import annotations

import pytest

from service.clients.errors import UpstreamError
from service.clients.retry import backoff_delay, with_retries


async def test_transient_errors_are_retried_until_success() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise UpstreamError("letta", "HTTP 503", status=503, transient=True)
        return "ok"

    assert await with_retries(flaky, attempts=3, base=0.001) == "ok"
    assert calls == 3


async def test_permanent_errors_are_not_retried() -> None:
    calls = 0

    async def bad_request() -> None:
        nonlocal calls
        calls += 1
        raise UpstreamError("litellm", "HTTP 400", status=400, transient=False)

    with pytest.raises(UpstreamError):
        await with_retries(bad_request, attempts=5, base=0.001)
    assert calls == 1


async def test_gives_up_after_the_last_attempt() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise UpstreamError("letta", "ConnectError", transient=True)

    with pytest.raises(UpstreamError):
        await with_retries(down, attempts=4, base=0.001)
    assert calls == 4


def test_backoff_is_bounded_and_jittered() -> None:
    delays = {backoff_delay(10, base=0.25, cap=2.0) for _ in range(50)}
    assert all(0 <= d <= 2.0 for d in delays)
    assert len(delays) > 1
