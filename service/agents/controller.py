"""``/api/v1/agent``: the caller's own agent — status, memory, export, reset."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Response, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter
from litestar.response import Stream

from service.agents.export import EXPORT_EXAMPLE
from service.agents.schemas import AgentExport, AgentMemory, AgentStatus, MemoryUpdate, ResetRequest, ResetResult
from service.agents.service import AgentService
from service.agents.spec import EDITABLE_BLOCKS
from service.auth.dependencies import provide_profile, provide_ready_profile
from service.billing.budgets import budget_exceeded
from service.chat.errors import turn_in_progress
from service.rate_limit import MEMORY_BUCKET, rate_limit
from service.users.profiles import ProfileRow, ReadyProfile
from service.web.examples import AGENT_STATUS_EXAMPLE, EXHAUSTED_BUDGET, MEMORY_EXAMPLE, RESET_EXAMPLE
from service.web.openapi import NOT_READY, body_example, documented, ok, problem, rate_limited
from service.web.problems import ProblemError

MEMORY_RATE_LIMITED = rate_limited(MEMORY_BUCKET, 30)  # the default RATE_LIMIT_MEMORY_PER_MINUTE


class AgentController(Controller):
    path = "/api/v1/agent"
    tags = ["agent"]
    dependencies = {"profile": Provide(provide_ready_profile)}

    @get(
        "/status",
        dependencies={"profile": Provide(provide_profile)},
        summary="Provisioning status, agent id, model, last activity and Letta reachability",
        responses={200: ok(AgentStatus, "Active agent", AGENT_STATUS_EXAMPLE)},
    )
    async def status(self, profile: NamedDependency[ProfileRow], agents: NamedDependency[AgentService]) -> AgentStatus:
        return await agents.status(profile)

    @get(
        "/memory",
        summary="Core memory blocks, archival memory count, optional archival search",
        guards=[rate_limit(MEMORY_BUCKET)],
        responses={
            200: ok(AgentMemory, "Memory with an archival search", MEMORY_EXAMPLE),
            402: documented(budget_exceeded(EXHAUSTED_BUDGET), "Over budget (an archival search only)"),
            429: MEMORY_RATE_LIMITED,
            503: NOT_READY,
        },
    )
    async def memory(
        self,
        profile: NamedDependency[ReadyProfile],
        agents: NamedDependency[AgentService],
        q: Annotated[
            str | None, QueryParameter(description="search archival memory", min_length=1, max_length=500)
        ] = None,
        top_k: Annotated[int, QueryParameter(ge=1, le=50, description="archival search results")] = 10,
    ) -> AgentMemory:
        return await agents.memory(profile.agent_id, q, top_k, profile.id)

    @patch(
        "/memory",
        summary="Replace the human and/or persona block (each within its limit)",
        # Two 5000-character blocks, JSON-escaped (non-ASCII as \u escapes by many clients): up to ~120 KB.
        request_max_body_size=128 * 1024,
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
        profile: NamedDependency[ReadyProfile],
        agents: NamedDependency[AgentService],
    ) -> AgentMemory:
        updates = {label: getattr(data, label) for label in EDITABLE_BLOCKS if getattr(data, label) is not None}
        if not updates:
            raise ProblemError(422, "send human and/or persona")
        for label, value in updates.items():
            if "\x00" in value:  # Postgres text cannot hold it: Letta would drop it silently
                raise ProblemError(422, f"{label} must not contain NUL characters", label=label)
        return await agents.update_memory(profile, updates)

    @get(
        "/export",
        summary="Your agent as a neutral JSON document: memory blocks, archival passages, Letta's message history",
        description=(
            "Format `ai-chat-backend.agent-export`, version 1 (see the README): streamed; at most "
            "`limits.passages` passages (oldest first) and `limits.messages` messages (newest first: the agent's own "
            "history, then each conversation's), `truncated` says whether a part was cut."
        ),
        guards=[rate_limit(MEMORY_BUCKET)],
        responses={
            200: ok(AgentExport, "An agent export", EXPORT_EXAMPLE),
            429: MEMORY_RATE_LIMITED,
            503: NOT_READY,
        },
    )
    async def export(
        self, profile: NamedDependency[ReadyProfile], agents: NamedDependency[AgentService]
    ) -> Response[Any]:
        stamp = datetime.now(UTC).strftime("%Y%m%d")
        return Stream(
            await agents.export(profile),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="agent-export-{stamp}.json"'},
        )

    @post(
        "/reset",
        status_code=200,
        summary="Replace the agent with a fresh one; chat history stays",
        guards=[rate_limit(MEMORY_BUCKET)],
        responses={
            200: ok(ResetResult, "Replaced", RESET_EXAMPLE),
            409: documented(
                turn_in_progress(), "A reply is being written (or `reset_in_progress`: another reset runs)"
            ),
            429: MEMORY_RATE_LIMITED,
        },
    )
    async def reset(
        self,
        profile: NamedDependency[ReadyProfile],
        agents: NamedDependency[AgentService],
        data: Annotated[ResetRequest | None, body_example("Keep core memory", {"keep_memory": True})] = None,
    ) -> ResetResult:
        # No body is the default reset (keep_memory false), not a validation error.
        return await agents.reset(profile, keep_memory=data.keep_memory if data else False)
