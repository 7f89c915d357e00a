"""What our upstream clients share: one error type that says whether a retry can help."""

from __future__ import annotations

import time
from typing import Any

import httpx


class UpstreamError(Exception):
    """A call to Letta or LiteLLM failed. ``transient`` errors (timeouts, 5xx, refused) may be retried."""

    def __init__(
        self, service: str, message: str, *, status: int | None = None, transient: bool, timed_out: bool = False
    ) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status = status
        self.transient = transient
        # The request went out but no answer came in time: the upstream may still act on it.
        self.timed_out = timed_out


def error_from_response(service: str, response: httpx.Response) -> UpstreamError:
    text = response.text[:500]
    return UpstreamError(
        service,
        f"HTTP {response.status_code}: {text}",
        status=response.status_code,
        transient=response.status_code >= 500 or response.status_code in (408, 429),
    )


def error_from_exception(service: str, exc: httpx.HTTPError) -> UpstreamError:
    return UpstreamError(service, f"{type(exc).__name__}: {exc}", transient=True)


async def probe(http: httpx.AsyncClient, url: str, service: str) -> dict[str, Any]:
    """Time one GET for a readiness report: ``{"ok", "latency_ms", "error"?}``."""
    started = time.perf_counter()
    try:
        response = await http.get(url, timeout=3.0)
        ok = response.status_code < 400
        error = None if ok else f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        ok, error = False, f"{type(exc).__name__}: {exc}"
    result: dict[str, Any] = {"ok": ok, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}
    if error:
        result["error"] = error
    return {service: result}
