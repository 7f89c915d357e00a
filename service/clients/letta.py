"""Letta server API, through the official ``letta-client`` SDK (except the streamed turn, see ``open_stream``).

Letta does not isolate users inside one organisation, so every method here takes ids the service has
already checked belong to the caller (see ``service.provisioning``). The SDK retries nothing
(``max_retries=0``): retry policy is ours, in one place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import letta_client
from letta_client import AsyncLetta

from service.clients.errors import UpstreamError
from service.clients.http import probe
from service.clients.letta_stream import SERVICE, STREAM_TIMEOUT, LettaStream, text_of, translate

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RunOutcome:
    status: str  # created | running | completed | failed | cancelled
    stop_reason: str | None
    text: str
    letta_message_id: str | None


# A cancel is sent when a turn already went wrong: it must not hold the caller up for long.
CANCEL_TIMEOUT_SECONDS = 5.0


@asynccontextmanager
async def _letta_errors() -> AsyncIterator[None]:
    try:
        yield
    except (letta_client.APIError, httpx.HTTPError) as exc:
        raise translate(exc) from exc


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
    async def agents_tagged(self, tag: str) -> list[Any]:
        """Every agent carrying ``tag`` (a user's tag: see ``service.agents.spec``), oldest first."""

        async def collect() -> list[Any]:
            page = await self.sdk.agents.list(tags=[tag], match_all_tags=True, limit=50)
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
                raise UpstreamError.from_response(SERVICE, response)
        except httpx.HTTPError as exc:
            raise translate(exc) from exc
        return LettaStream(response)

    def turn_request(self, agent_id: str, content: str, otid: str) -> httpx.Request:
        """A token-streamed turn with keep-alive pings: letta-client's request for it, headers included. ``otid``
        (our stored message's id) stays on Letta's copy of the message: a turn is findable by it."""
        return self._http.build_request(
            "POST",
            f"{self.base_url}/v1/agents/{quote(agent_id, safe='')}/messages",
            json={
                "messages": [{"role": "user", "content": content, "otid": otid}],
                "streaming": True,
                "stream_tokens": True,
                "include_pings": True,
            },
            headers=self._sdk_headers,
            timeout=STREAM_TIMEOUT,
        )

    async def run_of_message(self, agent_id: str, otid: str) -> str | None:
        """The id of the run that took the user message sent with ``otid``; None when Letta has no such message
        (never delivered, or its turn was cancelled: Letta keeps nothing of a cancelled turn)."""

        async def find() -> str | None:
            page = await self.sdk.agents.messages.list(agent_id, limit=100, order="desc")
            for message in page.items:
                if getattr(message, "otid", None) == otid and getattr(message, "message_type", "") == "user_message":
                    run_id = getattr(message, "run_id", None)
                    return str(run_id) if run_id else None
            return None

        return await self.call(find)

    async def run_outcome(self, run_id: str) -> RunOutcome:
        """What a run came to: Letta's status, its stop reason, and the reply text it stored."""

        async def read() -> RunOutcome:
            run = await self.sdk.runs.retrieve(run_id)
            page = await self.sdk.runs.messages.list(run_id, limit=1000, order="asc")
            text, message_id = [], None
            for message in page.items:
                if getattr(message, "message_type", "") == "assistant_message":
                    text.append(text_of(getattr(message, "content", None)))
                    message_id = getattr(message, "id", None)
            return RunOutcome(
                status=str(run.status or "running"),
                stop_reason=str(run.stop_reason) if run.stop_reason else None,
                text="".join(text),
                letta_message_id=message_id,
            )

        return await self.call(read)

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
