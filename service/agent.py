"""``/api/v1/agent``: the caller's own agent — status, memory, reset.

Ownership: the agent id always comes from the caller's profile, never from the request, so a user can
reach no agent but their own (Letta itself does not isolate users within one organisation).
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial
from typing import Annotated

import msgspec
from litestar import Controller, get, patch, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import QueryParameter

from service.chat.turns import ChatService, turn_in_progress
from service.clients.base import UpstreamError
from service.clients.letta import LettaClient, provider_name
from service.errors import ProblemError
from service.openapi import AGENT_ID, NOT_READY, body_example, documented, ok, problem, rate_limited
from service.provisioning.agent_spec import agent_spec
from service.provisioning.deps import ActiveProfile, AnyProfile, provide_active_profile, provide_profile
from service.rate_limit import MEMORY_BUCKET, rate_limit
from service.retry import with_retries

MEMORY_RATE_LIMITED = rate_limited(MEMORY_BUCKET, 30)  # the default RATE_LIMIT_MEMORY_PER_MINUTE

logger = logging.getLogger("service.agent")

EDITABLE_BLOCKS = ("human", "persona")


class LettaStatus(msgspec.Struct):
    reachable: bool
    latency_ms: float
    agent_found: bool | None


class AgentStatus(msgspec.Struct, kw_only=True):
    agent_status: str
    agent_id: str | None
    model: str | None
    last_active_at: datetime | None
    provisioning_attempts: int
    provisioning_error: str | None
    letta: LettaStatus


class MemoryBlock(msgspec.Struct):
    label: str
    value: str
    limit: int | None


class ArchivalHit(msgspec.Struct):
    content: str
    timestamp: str | None


class AgentMemory(msgspec.Struct, kw_only=True):
    agent_id: str
    blocks: list[MemoryBlock]
    archival_count: int
    archival_results: list[ArchivalHit] | None = None


class MemoryUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    human: str | None = None
    persona: str | None = None


class ResetRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    keep_memory: bool = False


class ResetResult(msgspec.Struct):
    agent_id: str
    previous_agent_id: str | None
    kept_memory: bool


def _upstream_problem(exc: UpstreamError) -> ProblemError:
    logger.warning("letta call failed", extra={"error": str(exc)})
    return ProblemError(
        503,
        "the agent service is unreachable right now; retry shortly",
        title="Agent Unavailable",
        headers={"Retry-After": "5"},
    )


async def read_memory(letta: LettaClient, agent_id: str, query: str | None, top_k: int) -> AgentMemory:
    try:
        blocks = await letta.memory_blocks(agent_id)
        count = await letta.archival_count(agent_id)
        hits = await letta.archival_search(agent_id, query, top_k) if query else None
    except UpstreamError as exc:
        raise _upstream_problem(exc) from exc
    return AgentMemory(
        agent_id=agent_id,
        blocks=[MemoryBlock(b["label"], b["value"], b["limit"]) for b in blocks],
        archival_count=count,
        archival_results=[ArchivalHit(h["content"], h["timestamp"]) for h in hits] if hits is not None else None,
    )


MEMORY_EXAMPLE = {
    "agent_id": AGENT_ID,
    "blocks": [
        {"label": "human", "value": "User's name: Ada\nmy cat is Miso", "limit": 5000},
        {"label": "persona", "value": "You are a helpful, intelligent assistant with perfect memory.", "limit": 5000},
    ],
    "archival_count": 1,
    "archival_results": [{"content": "my passport number ends in 42", "timestamp": "2026-11-21 10:15:02 AM UTC"}],
}


class AgentController(Controller):
    path = "/api/v1/agent"
    tags = ["agent"]
    dependencies = {"profile": Provide(provide_active_profile)}

    @get(
        "/status",
        dependencies={"profile": Provide(provide_profile)},
        summary="Provisioning status, agent id, model, last activity and Letta reachability",
        responses={
            200: ok(
                AgentStatus,
                "Active agent",
                {
                    "agent_status": "active",
                    "agent_id": AGENT_ID,
                    "model": "gpt-4o-mini",
                    "last_active_at": "2026-11-21T10:15:02Z",
                    "provisioning_attempts": 0,
                    "provisioning_error": None,
                    "letta": {"reachable": True, "latency_ms": 3.2, "agent_found": True},
                },
            )
        },
    )
    async def status(self, profile: AnyProfile, state: State) -> AgentStatus:
        letta: LettaClient = state.letta
        health = (await letta.health())["letta"]
        agent_found = None
        if health["ok"] and profile.letta_agent_id:
            try:
                agent_found = await letta.get_agent(profile.letta_agent_id) is not None
            except UpstreamError:
                agent_found = None
        return AgentStatus(
            agent_status=profile.agent_status,
            agent_id=profile.letta_agent_id,
            model=profile.model,
            last_active_at=profile.last_active_at,
            provisioning_attempts=profile.provisioning_attempts,
            provisioning_error=profile.provisioning_error,
            letta=LettaStatus(reachable=health["ok"], latency_ms=health["latency_ms"], agent_found=agent_found),
        )

    @get(
        "/memory",
        summary="Core memory blocks, archival memory count, optional archival search",
        guards=[rate_limit(MEMORY_BUCKET)],
        responses={
            200: ok(AgentMemory, "Memory with an archival search", MEMORY_EXAMPLE),
            429: MEMORY_RATE_LIMITED,
            503: NOT_READY,
        },
    )
    async def memory(
        self,
        profile: ActiveProfile,
        state: State,
        q: Annotated[
            str | None, QueryParameter(description="search archival memory", min_length=1, max_length=500)
        ] = None,
        top_k: Annotated[int, QueryParameter(ge=1, le=50, description="archival search results")] = 10,
    ) -> AgentMemory:
        return await read_memory(state.letta, profile.letta_agent_id or "", q, top_k)

    @patch(
        "/memory",
        summary="Replace the human and/or persona block (each within its limit)",
        guards=[rate_limit(MEMORY_BUCKET)],
        responses={
            200: ok(AgentMemory, "Updated memory", {**MEMORY_EXAMPLE, "archival_results": None}),
            422: problem(422, "persona is 5001 characters; its limit is 5000", label="persona", limit=5000),
            429: MEMORY_RATE_LIMITED,
        },
    )
    async def update_memory(
        self,
        data: Annotated[MemoryUpdate, body_example("New human block", {"human": "User's name: Ada. Has a cat, Miso."})],
        profile: ActiveProfile,
        state: State,
    ) -> AgentMemory:
        updates = {label: getattr(data, label) for label in EDITABLE_BLOCKS if getattr(data, label) is not None}
        if not updates:
            raise ProblemError(422, "send human and/or persona")
        for label, value in updates.items():
            if "\x00" in value:  # Postgres text cannot hold it: Letta would drop it silently
                raise ProblemError(422, f"{label} must not contain NUL characters", label=label)
        letta: LettaClient = state.letta
        agent_id = profile.letta_agent_id or ""
        try:
            limits = {b["label"]: b["limit"] for b in await letta.memory_blocks(agent_id)}
            for label, value in updates.items():
                limit = limits.get(label)
                if limit is not None and len(value) > limit:
                    raise ProblemError(
                        422, f"{label} is {len(value)} characters; its limit is {limit}", label=label, limit=limit
                    )
            for label, value in updates.items():
                await letta.update_block(agent_id, label, value)
        except UpstreamError as exc:
            raise _upstream_problem(exc) from exc
        return await read_memory(letta, agent_id, None, 0)

    @post(
        "/reset",
        status_code=200,
        summary="Replace the agent with a fresh one; chat history stays",
        guards=[rate_limit(MEMORY_BUCKET)],
        responses={
            200: ok(
                ResetResult,
                "Replaced",
                {
                    "agent_id": "agent-1b2c3d4e-0000-4000-8000-000000000005",
                    "previous_agent_id": AGENT_ID,
                    "kept_memory": True,
                },
            ),
            409: documented(turn_in_progress()),
            429: MEMORY_RATE_LIMITED,
        },
    )
    async def reset(
        self,
        data: Annotated[ResetRequest, body_example("Keep core memory", {"keep_memory": True})],
        profile: ActiveProfile,
        state: State,
    ) -> ResetResult:
        chat: ChatService = state.chat
        letta: LettaClient = state.letta
        uid = str(profile.id)
        # Hold the chat lease: no turn may talk to an agent that is being replaced.
        lease = await chat.acquire_lease(profile.id, holder="agent-reset")
        try:
            current = profile.letta_agent_id
            # Leftovers of an interrupted reset (a new agent never recorded, or an old one never deleted).
            for stray in await with_retries(lambda: letta.agents_of(uid)):
                if stray.id != current:
                    await with_retries(partial(letta.delete_agent, stray.id))
            blocks = None
            if data.keep_memory and current:
                blocks = {
                    b["label"]: b["value"]
                    for b in await with_retries(lambda: letta.memory_blocks(current))
                    if b["label"] in EDITABLE_BLOCKS
                }
            spec = agent_spec(
                state.settings, uid, profile.display_name, provider_name(uid), state.litellm.openai_base_url, blocks
            )
            agent = await with_retries(lambda: letta.create_agent(spec))
            await state.db.execute(
                "update public.user_profiles set letta_agent_id = $2 where id = $1", profile.id, agent.id
            )
            if current:
                await with_retries(lambda: letta.delete_agent(current))
        except UpstreamError as exc:
            raise _upstream_problem(exc) from exc
        finally:
            await chat.release_lease(profile.id, lease)
        logger.info("agent reset", extra={"user_id": uid, "agent_id": agent.id, "previous": current})
        return ResetResult(agent_id=agent.id, previous_agent_id=current, kept_memory=blocks is not None)
