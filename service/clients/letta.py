"""Letta server API, through the official ``letta-client`` SDK (except the streamed turn, see ``open_stream``).

Letta does not isolate users inside one organisation, so every method here takes ids the service has
already checked belong to the caller (see ``service.provisioning``). The SDK retries nothing
(``max_retries=0``): retry policy is ours, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import letta_client
import msgspec
from letta_client import AsyncLetta

from service.clients.base import UpstreamError, error_from_response, probe

SERVICE = "letta"
logger = logging.getLogger("service.letta")
T = TypeVar("T")
# A busy Letta may take long to start a turn (it queues for the LLM and its database); once streaming, it
# sends keep-alive pings, so a long read timeout never holds a dead connection for long.
STREAM_TIMEOUT = httpx.Timeout(connect=5.0, read=120.0, write=30.0, pool=30.0)
# A cancel is sent when a turn already went wrong: it must not hold the caller up for long.
CANCEL_TIMEOUT_SECONDS = 5.0


def user_tag(user_id: str) -> str:
    return f"user:{user_id}"


def provider_name(user_id: str) -> str:
    return f"user-{user_id}"


def agent_name(user_id: str) -> str:
    return f"agent-{user_id}"


def _translate(exc: Exception) -> UpstreamError:
    """An SDK or httpx error as ``UpstreamError``."""
    if isinstance(exc, letta_client.APIStatusError):
        status = exc.status_code
        return UpstreamError(
            SERVICE, f"HTTP {status}: {str(exc)[:2000]}", status=status, transient=status >= 500 or status in (408, 429)
        )
    cause = f" ({exc.__cause__})" if exc.__cause__ else ""
    # The SDK wraps httpx's error: look at that. A connect timeout never reached Letta; any other timeout came
    # after the request went out, and Letta may still act on it.
    transport = exc.__cause__ if isinstance(exc, letta_client.APIConnectionError) and exc.__cause__ else exc
    timed_out = isinstance(transport, httpx.TimeoutException | letta_client.APITimeoutError) and not isinstance(
        transport, httpx.ConnectTimeout
    )
    return UpstreamError(SERVICE, f"{type(exc).__name__}: {exc}{cause}", transient=True, timed_out=timed_out)


@asynccontextmanager
async def _letta_errors() -> AsyncIterator[None]:
    try:
        yield
    except (letta_client.APIError, httpx.HTTPError) as exc:
        raise _translate(exc) from exc


class LettaClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, token: str | None) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        # A self-hosted Letta without a password takes no token: send no Authorization header at all.
        self.sdk = AsyncLetta(base_url=self.base_url, api_key=token or None, http_client=http, max_retries=0)
        # Without a token the SDK falls back to $LETTA_API_KEY; only LETTA_API_TOKEN may configure it.
        self.sdk.api_key = token or None
        # What the SDK sends with every request (its identity, which Letta requires for streaming=true, and the
        # token), for the one request sent without it.
        self._sdk_headers = {name: value for name, value in self.sdk.default_headers.items() if isinstance(value, str)}

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one SDK call with Letta's errors turned into ``UpstreamError``."""
        async with _letta_errors():
            return await operation()

    async def health(self) -> dict[str, Any]:
        return await probe(self._http, f"{self.base_url}/v1/health/", SERVICE)

    # -- providers: one BYOK provider per user carries that user's LiteLLM key ----------------------------
    # letta-client 1.12.1 has no providers resource: raw calls through the SDK's transport.
    async def find_provider(self, name: str) -> dict[str, Any] | None:
        found = await self.call(
            lambda: self.sdk.get("/v1/providers/", cast_to=object, options={"params": {"name": name}})
        )
        matches = [p for p in found if isinstance(p, dict) and p.get("name") == name] if isinstance(found, list) else []
        return matches[0] if matches else None

    async def create_provider(self, name: str, api_key: str, base_url: str) -> dict[str, Any]:
        body = {"name": name, "provider_type": "openai", "api_key": api_key, "base_url": base_url}
        created = await self.call(lambda: self.sdk.post("/v1/providers/", cast_to=object, body=body))
        assert isinstance(created, dict)
        return created

    async def update_provider_key(self, provider_id: str, api_key: str, base_url: str) -> None:
        body = {"api_key": api_key, "base_url": base_url}
        await self.call(lambda: self.sdk.patch(f"/v1/providers/{provider_id}", cast_to=object, body=body))

    async def get_provider(self, provider_id: str) -> dict[str, Any] | None:
        try:
            found = await self.call(lambda: self.sdk.get(f"/v1/providers/{provider_id}", cast_to=object))
        except UpstreamError as exc:
            if exc.status == 404:
                return None
            raise
        return found if isinstance(found, dict) else None

    async def delete_provider(self, provider_id: str) -> None:
        try:
            await self.call(lambda: self.sdk.delete(f"/v1/providers/{provider_id}", cast_to=object))
        except UpstreamError as exc:
            if exc.status != 404:
                raise

    # -- agents -----------------------------------------------------------------------------------------
    async def agents_of(self, user_id: str) -> list[Any]:
        """Every agent tagged as the user's, oldest first."""

        async def collect() -> list[Any]:
            page = await self.sdk.agents.list(tags=[user_tag(user_id)], match_all_tags=True, limit=50)
            agents = list(page.items)
            return sorted(agents, key=lambda a: (str(a.created_at or ""), a.id))

        return await self.call(collect)

    async def create_agent(self, spec: dict[str, Any]) -> Any:
        return await self.call(lambda: self.sdk.agents.create(**spec))

    async def get_agent(self, agent_id: str) -> Any | None:
        try:
            return await self.call(lambda: self.sdk.agents.retrieve(agent_id))
        except UpstreamError as exc:
            if exc.status == 404:
                return None
            raise

    # -- messages ---------------------------------------------------------------------------------------
    async def open_stream(self, request: httpx.Request) -> LettaStream:
        """Send a turn built by ``turn_request``; returns once Letta has accepted it (errors here are pre-stream).

        This is the SDK's ``agents.messages.create(streaming=True, stream_tokens=True, include_pings=True)``
        request, sent on the shared client without the SDK: it is on the path to every first token, where
        letta-client's request building costs ~0.7 ms and its event models ~38 µs per event. The events are
        parsed with msgspec (``LettaStream``).
        """
        try:
            response = await self._http.send(request, stream=True)
            if response.is_error:
                await response.aread()
                await response.aclose()
                raise error_from_response(SERVICE, response)
        except httpx.HTTPError as exc:
            raise _translate(exc) from exc
        return LettaStream(response)

    def turn_request(self, agent_id: str, content: str) -> httpx.Request:
        """A token-streamed turn with keep-alive pings: letta-client's request for it, headers included."""
        return self._http.build_request(
            "POST",
            f"{self.base_url}/v1/agents/{quote(agent_id, safe='')}/messages",
            json={
                "messages": [{"role": "user", "content": content}],
                "streaming": True,
                "stream_tokens": True,
                "include_pings": True,
            },
            headers=self._sdk_headers,
            timeout=STREAM_TIMEOUT,
        )

    async def run_usage(self, run_id: str) -> dict[str, int]:
        """Letta's token counts for a run: what a turn cost even when its stream broke before the totals."""
        usage = await self.call(lambda: self.sdk.runs.usage.retrieve(run_id))
        return {
            "prompt_tokens": usage.prompt_tokens or 0,
            "completion_tokens": usage.completion_tokens or 0,
            "total_tokens": usage.total_tokens or 0,
        }

    async def cancel_run(self, agent_id: str, run_id: str | None) -> None:
        """Cancel one run of the agent, or with ``run_id`` None every run of it that is still active (Letta
        looks them up itself): for a turn whose stream was lost before its run id was seen."""
        run_ids = [run_id] if run_id else letta_client.omit
        await self.call(
            lambda: self.sdk.agents.messages.cancel(agent_id, run_ids=run_ids, timeout=CANCEL_TIMEOUT_SECONDS)
        )

    # -- memory -----------------------------------------------------------------------------------------
    async def memory_blocks(self, agent_id: str) -> list[dict[str, Any]]:
        """Core memory blocks: ``[{"label", "value", "limit"}]``."""

        async def read() -> list[dict[str, Any]]:
            agent = await self.sdk.agents.retrieve(agent_id, include=["agent.blocks"])
            blocks = agent.blocks or (agent.memory.blocks if agent.memory else [])
            return [{"label": b.label, "value": b.value, "limit": b.limit} for b in blocks if b.label]

        return await self.call(read)

    async def update_block(self, agent_id: str, label: str, value: str) -> None:
        await self.call(lambda: self.sdk.agents.blocks.update(label, agent_id=agent_id, value=value))

    async def archival_count(self, agent_id: str) -> int:
        # Letta 0.16.8 reports the count only in its context-window overview.
        overview = await self.call(lambda: self.sdk.get(f"/v1/agents/{agent_id}/context", cast_to=object))
        return int(overview.get("num_archival_memory", 0)) if isinstance(overview, dict) else 0

    async def archival_search(self, agent_id: str, query: str, top_k: int) -> list[dict[str, Any]]:
        found = await self.call(lambda: self.sdk.agents.passages.search(agent_id, query=query, top_k=top_k))
        return [{"content": r.content, "timestamp": str(r.timestamp) if r.timestamp else None} for r in found.results]

    async def delete_agent(self, agent_id: str) -> None:
        try:
            await self.call(lambda: self.sdk.agents.delete(agent_id))
        except UpstreamError as exc:
            if exc.status != 404:
                raise


class ToolCall(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None
    tool_call_id: str | None = None


class ContentPart(msgspec.Struct):
    text: str | None = None


class LettaEvent(msgspec.Struct):
    """One event of Letta's stream: the fields the service reads, whatever the ``message_type``."""

    message_type: str | None = None
    id: str | None = None
    run_id: str | None = None
    seq_id: int | None = None
    content: str | list[ContentPart] | None = None
    tool_call: ToolCall | None = None
    tool_calls: list[ToolCall] | ToolCall | None = None  # a list, or one delta while token streaming
    name: str | None = None
    status: str | None = None
    tool_call_id: str | None = None
    tool_return: Any = None
    stop_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    step_count: int | None = None
    error_type: str | None = None
    message: str | None = None
    detail: str | None = None


_decode_event = msgspec.json.Decoder(LettaEvent).decode


class LettaStream:
    """Letta's Server-Sent Events as ``LettaEvent``s, until ``data: [DONE]``.

    An ``event: error`` (Letta's in-stream failure) raises ``UpstreamError`` with the stream's status, and
    transport failures raise transient ones.
    """

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._lines = response.aiter_lines()
        self._finished = False  # [DONE] was read
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[LettaEvent]:
        kind = ""
        try:
            async for line in self._lines:
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                    if data == "[DONE]":
                        self._finished = True
                        return
                    if kind == "error":
                        raise UpstreamError(
                            SERVICE,
                            f"HTTP {self._response.status_code}: {data[:2000]}",
                            status=self._response.status_code,
                            transient=False,
                        )
                    try:
                        event = _decode_event(data)
                    except msgspec.DecodeError as exc:
                        # A shape we do not know must not end the turn: skip it, and say so.
                        logger.warning("skipped an unreadable Letta event", extra={"error": str(exc)})
                        continue
                    yield event
                elif not line:
                    kind = ""
        except httpx.HTTPError as exc:
            raise _translate(exc) from exc

    async def close(self) -> None:
        """Release the response. After [DONE], Letta still finishes its run before it ends the body (~100 ms):
        that rest is read in the background, so the turn is not held up and the connection, read to its end,
        goes back to the pool (closed mid-body, it would be dropped and the next turn would open a new one)."""
        if self._closed:  # a cancel and the turn's own clean-up may both close it
            return
        self._closed = True
        if not self._finished:
            await self._response.aclose()
            return
        task = asyncio.get_running_loop().create_task(self._drain())
        _draining.add(task)
        task.add_done_callback(_draining.discard)

    async def _drain(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(DRAIN_SECONDS):
                async for _ in self._lines:
                    pass
        with contextlib.suppress(Exception):
            await self._response.aclose()


# How long a finished stream may take to end its body before its connection is dropped instead.
DRAIN_SECONDS = 10.0
_draining: set[asyncio.Task[None]] = set()  # strong references: the event loop keeps only weak ones
