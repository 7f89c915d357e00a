"""Letta server API, through the official ``letta-client`` SDK (except the streamed turn, see ``open_stream``).

Letta does not isolate users inside one organisation, so every method here takes ids the service has
already checked belong to the caller (see ``service.provisioning``). The SDK retries nothing
(``max_retries=0``): retry policy is ours, in one place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import letta_client
from letta_client import AsyncLetta

from service.clients.errors import UpstreamError
from service.clients.http import probe
from service.clients.letta_stream import SERVICE, STREAM_TIMEOUT, LettaStream, text_of, translate
from service.clients.letta_version import LettaVersion

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
    def __init__(
        self, http: httpx.AsyncClient, base_url: str, token: str | None, version: LettaVersion | None = None
    ) -> None:
        self._http = http
        # The app's client (service.wiring) holds Letta to a tested version: no call goes out before it is checked.
        self.version = version
        self.base_url = base_url.rstrip("/")
        # A self-hosted Letta without a password takes no token: send no Authorization header at all.
        self.sdk = AsyncLetta(base_url=self.base_url, api_key=token or None, http_client=http, max_retries=0)
        # Without a token the SDK falls back to $LETTA_API_KEY; only LETTA_API_TOKEN may configure it.
        self.sdk.api_key = token or None
        # For the one request sent without the SDK (the turn), only what Letta 0.16.8 reads of the SDK's headers: the
        # token, and the SDK's version, without which its agent route refuses streaming=true (ARCHITECTURE.md §7).
        # The others would be kept for every open stream for nothing.
        self._turn_headers = {
            name: value
            for name, value in self.sdk.default_headers.items()
            if name in ("Authorization", "X-Stainless-Package-Version") and isinstance(value, str)
        }

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one SDK call with Letta's errors turned into ``UpstreamError``."""
        if self.version is not None and not self.version.accepted:
            await self.version.verify()
        async with _letta_errors():
            return await operation()

    async def health(self) -> dict[str, Any]:
        if self.version is not None:
            return await self.version.probe()  # the same request, its version judged too
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
        if self.version is not None and not self.version.accepted:
            await self.version.verify()
        try:
            response = await self._http.send(request, stream=True)
            if response.is_error:
                await response.aread()
                await response.aclose()
                raise UpstreamError.from_response(SERVICE, response)
        except httpx.HTTPError as exc:
            raise translate(exc) from exc
        return LettaStream(response)

    def turn_request(
        self,
        agent_id: str,
        content: str,
        otid: str,
        conversation_id: str | None = None,
        context: str | None = None,
    ) -> httpx.Request:
        """A token-streamed turn with keep-alive pings: letta-client's request for it, with the headers Letta reads.
        ``otid`` (our stored message's id) stays on Letta's copy of the message: a turn is findable by it. Sent to the
        agent's own history, or with ``conversation_id`` to that conversation of the agent (a thread); ``context``
        goes before the user's message as a system message (a branch's transcript)."""
        messages: list[dict[str, str]] = [{"role": "system", "content": context}] if context else []
        messages.append({"role": "user", "content": content, "otid": otid})
        path = (
            f"/v1/conversations/{quote(conversation_id, safe='')}/messages"
            if conversation_id
            else f"/v1/agents/{quote(agent_id, safe='')}/messages"
        )
        return self._http.build_request(
            "POST",
            f"{self.base_url}{path}",
            json={
                "messages": messages,
                "streaming": True,
                "stream_tokens": True,
                "include_pings": True,
            },
            headers=self._turn_headers,
            timeout=STREAM_TIMEOUT,
        )

    # -- conversations: a thread's own context on the agent (letta-client 1.12.1's resource is not used: raw
    # calls through its transport keep the shapes Letta 0.16.8 answers with) ----------------------------------
    async def create_conversation(self, agent_id: str) -> str:
        """A new conversation of the agent; its system message is compiled from the memory as it is now."""
        created = await self.call(
            lambda: self.sdk.post("/v1/conversations/", cast_to=object, options={"params": {"agent_id": agent_id}})
        )
        assert isinstance(created, dict)
        return str(created["id"])

    async def recompile_conversation(self, conversation_id: str) -> None:
        """Render the agent's current memory into the conversation's system message: Letta compiles it when the
        conversation is created and memory edits (even the conversation's own) recompile only the agent's
        default history (ARCHITECTURE.md §7)."""
        path = f"/v1/conversations/{quote(conversation_id, safe='')}/recompile"
        await self.call(lambda: self.sdk.post(path, cast_to=object))

    async def fork_conversation(self, agent_id: str, conversation_id: str | None) -> str:
        """A copy of a conversation's context (or of the agent's own history, ``conversation_id`` None) with a
        freshly compiled system message."""
        source = quote(conversation_id, safe="") if conversation_id else "default"
        params = {} if conversation_id else {"agent_id": agent_id}
        forked = await self.call(
            lambda: self.sdk.post(f"/v1/conversations/{source}/fork", cast_to=object, options={"params": params})
        )
        assert isinstance(forked, dict)
        return str(forked["id"])

    async def delete_conversation(self, conversation_id: str) -> None:
        try:
            path = f"/v1/conversations/{quote(conversation_id, safe='')}"
            await self.call(lambda: self.sdk.delete(path, cast_to=object))
        except UpstreamError as exc:
            if exc.status != 404:
                raise

    async def reset_history(self, agent_id: str) -> None:
        """Empty the agent's own history (its default conversation); memory and archival stay."""
        path = f"/v1/agents/{quote(agent_id, safe='')}/reset-messages"
        await self.call(lambda: self.sdk.patch(path, cast_to=object, body={"add_default_initial_messages": False}))

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
        """The agent, and its archival memory: Letta 0.16.8 keeps an agent's archive (passages and embeddings)
        when the agent is deleted."""
        try:
            archives = await self.call(
                lambda: self.sdk.get("/v1/archives/", cast_to=object, options={"params": {"agent_id": agent_id}})
            )
        except UpstreamError as exc:
            if exc.status != 404:  # an agent Letta no longer knows: nothing to find its archive by
                raise
            archives = []
        try:
            await self.call(lambda: self.sdk.agents.delete(agent_id))
        except UpstreamError as exc:
            if exc.status != 404:
                raise
        for archive in archives if isinstance(archives, list) else []:
            if isinstance(archive, dict) and archive.get("id"):
                await self._delete_archive(str(archive["id"]))

    async def _delete_archive(self, archive_id: str) -> None:
        """An archive the deleted agent used, unless another agent still uses it."""
        path = f"/v1/archives/{quote(archive_id, safe='')}"
        try:
            users = await self.call(lambda: self.sdk.get(f"{path}/agents", cast_to=object))
            if not users:
                # 204 without a body: the raw response, not JSON.
                await self.call(lambda: self.sdk.delete(path, cast_to=httpx.Response))
        except UpstreamError as exc:
            if exc.status != 404:
                raise

    # -- export and rebuild (service.agents.export): raw shapes of Letta 0.16.8, paged by id cursors ----------
    async def agent_snapshot(self, agent_id: str) -> dict[str, Any]:
        """The agent as Letta has it, with its blocks (label, value, limit, description) and ``message_ids`` (its own
        history's in-context messages, the system message first)."""
        path = f"/v1/agents/{quote(agent_id, safe='')}"
        found = await self.call(
            lambda: self.sdk.get(path, cast_to=object, options={"params": {"include": ["agent.blocks"]}})
        )
        assert isinstance(found, dict)
        return found

    async def passages_page(self, agent_id: str, after: str | None, limit: int) -> list[dict[str, Any]]:
        """Archival passages oldest first, those after the passage ``after``."""
        params: dict[str, Any] = {"limit": limit, "ascending": True}
        if after:
            params["after"] = after
        path = f"/v1/agents/{quote(agent_id, safe='')}/archival-memory"
        found = await self.call(lambda: self.sdk.get(path, cast_to=object, options={"params": params}))
        return [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []

    async def conversations_page(self, agent_id: str, after: str | None, limit: int) -> list[dict[str, Any]]:
        """The agent's conversations oldest first, those after the conversation ``after``."""
        params: dict[str, Any] = {"agent_id": agent_id, "limit": limit, "order": "asc"}
        if after:
            params["after"] = after
        found = await self.call(lambda: self.sdk.get("/v1/conversations/", cast_to=object, options={"params": params}))
        return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []

    async def messages_page(
        self, agent_id: str, conversation_id: str | None, before: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` stored messages of one conversation (None: the agent's own history) older than the
        message ``before``, as Letta lists them: oldest first within the page, several entries for one stored
        message sharing its id. Letta's entries carry no conversation id: the caller asks per conversation."""
        params: dict[str, Any] = {"conversation_id": conversation_id or "default", "order": "desc", "limit": limit}
        if before:
            params["before"] = before
        path = f"/v1/agents/{quote(agent_id, safe='')}/messages"
        found = await self.call(lambda: self.sdk.get(path, cast_to=object, options={"params": params}))
        return [m for m in found if isinstance(m, dict)] if isinstance(found, list) else []

    async def import_agent(self, agent_file: bytes, name: str) -> str:
        """Create an agent from Letta's own agent file (its one way to store messages without running a turn);
        returns the new agent's id."""
        imported = await self.call(
            lambda: self.sdk.agents.import_file(
                file=("agent.af", agent_file, "application/json"),
                name=name,
                append_copy_suffix=False,
                override_existing_tools=False,
                timeout=IMPORT_TIMEOUT_SECONDS,
            )
        )
        return str(imported.agent_ids[0])

    async def insert_passages(self, agent_id: str, passages: list[dict[str, Any]]) -> None:
        """Add archival passages (``text``, ``tags``, ``created_at``), embedded by Letta: the first through the agent,
        which makes its archive, the rest into that archive in batches (one embedding request each)."""
        if not passages:
            return
        first, rest = passages[0], passages[1:]
        await self.call(lambda: self.sdk.agents.passages.create(agent_id, **first))
        if not rest:
            return
        found = await self.call(
            lambda: self.sdk.get("/v1/archives/", cast_to=object, options={"params": {"agent_id": agent_id}})
        )
        archives = [a for a in found if isinstance(a, dict)] if isinstance(found, list) else []
        archive_id = str(archives[0]["id"]) if archives else None
        if archive_id is None:
            raise UpstreamError(SERVICE, "the agent has no archive after a passage was inserted", transient=False)
        for batch in _passage_batches(rest):
            create = self.sdk.archives.passages.create_many
            await self.call(partial(create, archive_id, passages=batch, timeout=IMPORT_TIMEOUT_SECONDS))  # type: ignore[arg-type]

    async def recompile(self, agent_id: str) -> None:
        """Render the agent's memory into its system message now (Letta otherwise does it only after a memory edit)."""
        await self.call(lambda: self.sdk.agents.recompile(agent_id))

    # -- step feedback (service.chat.feedback): a reply's rating, on the Letta step that wrote the reply ----------
    async def step_of_message(self, run_id: str, message_id: str | None) -> str | None:
        """The step of run ``run_id`` that wrote the message ``message_id`` (None, or not found: the run's newest
        assistant message); None when the run has no such message or Letta names no step for it."""
        path = f"/v1/runs/{quote(run_id, safe='')}/messages"
        params = {"order": "desc", "limit": 100}
        found = await self.call(lambda: self.sdk.get(path, cast_to=object, options={"params": params}))
        listed = [m for m in found if isinstance(m, dict) and m.get("step_id")] if isinstance(found, list) else []
        exact = [m for m in listed if message_id and m.get("id") == message_id]
        chosen = exact or [m for m in listed if m.get("message_type") == "assistant_message"]
        return str(chosen[0]["step_id"]) if chosen else None

    async def set_step_feedback(self, step_id: str, feedback: str | None) -> None:
        """Set a step's feedback: ``positive``, ``negative``, or None to clear it (Letta stores what it is sent;
        a step has no field for a comment)."""
        path = f"/v1/steps/{quote(step_id, safe='')}/feedback"
        await self.call(lambda: self.sdk.patch(path, cast_to=object, body={"feedback": feedback}))


# Importing an agent file, or embedding a batch of passages in one request, takes longer than a plain call.
IMPORT_TIMEOUT_SECONDS = 120.0
# One embedding request per batch: within OpenAI's 2048 inputs and ~300k tokens per request.
PASSAGE_BATCH = 100
PASSAGE_BATCH_CHARS = 400_000


def _passage_batches(passages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    batches: list[list[dict[str, Any]]] = []
    size = 0
    for passage in passages:
        chars = len(passage["text"])
        if not batches or len(batches[-1]) == PASSAGE_BATCH or (batches[-1] and size + chars > PASSAGE_BATCH_CHARS):
            batches.append([])
            size = 0
        batches[-1].append(passage)
        size += chars
    return batches
