"""The process's pooled HTTP client for every upstream, and the readiness probe."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import HttpxAiohttpClient
from httpx_aiohttp.transport import AiohttpTransport

from service.observability.upstream import UpstreamCall, Upstreams


def http_client(
    *, limits: httpx.Limits, timeout: httpx.Timeout, upstreams: Mapping[str, str] | None = None
) -> httpx.AsyncClient:
    """The process's pooled client for Letta, LiteLLM and Supabase: httpx's API on aiohttp's transport
    (letta-client's documented aiohttp backend), which costs ~1 ms less per call than httpx's own, on the path
    to the first token. ``upstreams`` names the base URLs (``{"letta": LETTA_BASE_URL, ...}``) its calls are
    observed under (``service.observability.upstream``)."""
    transport = _Transport(limits=limits)
    transport.upstreams = Upstreams(upstreams)
    return HttpxAiohttpClient(limits=limits, timeout=timeout, transport=transport)


class _Transport(AiohttpTransport):
    """httpx-aiohttp 0.2.0 reports every aiohttp connection error as ``httpx.ConnectTimeout``, a refused
    connection or a server that went away included. Those are raised as httpx itself would raise them.

    Every call is observed here (latency, errors, span): the one place all of them pass."""

    upstreams = Upstreams()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call = UpstreamCall(self.upstreams, request)
        try:
            response = await super().handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            renamed = _renamed(exc, request)
            call.failed(renamed)
            raise renamed from exc.__cause__
        except BaseException as exc:
            call.failed(exc)
            raise
        call.answered(response)
        response.stream = _RenamedErrors(response.stream, request, call)  # type: ignore[arg-type]
        return response


class _RenamedErrors(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, request: httpx.Request, call: UpstreamCall) -> None:
        self._stream = stream
        self._request = request
        self._call = call

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except httpx.ConnectTimeout as exc:
            renamed = _renamed(exc, self._request)
            self._call.broke(renamed)
            raise renamed from exc.__cause__
        except httpx.TransportError as exc:
            self._call.broke(exc)
            raise

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._call.closed()


def _renamed(exc: httpx.ConnectTimeout, request: httpx.Request) -> httpx.TransportError:
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ServerTimeoutError) or not isinstance(cause, aiohttp.ClientConnectionError):
        return exc  # a timeout indeed
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(cause), request=request)
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(str(cause), request=request)
    return httpx.ReadError(str(cause), request=request)


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
