"""The caller's own agent: its status, its memory, and replacing it.

Ownership: the agent id always comes from the caller's profile, never from the request, so a user can reach
no agent but their own (Letta itself does not isolate users within one organisation).
"""

from __future__ import annotations

import logging
import uuid

from service.agents.lifecycle import AgentLifecycle
from service.agents.schemas import AgentMemory, AgentStatus, ArchivalHit, LettaStatus, MemoryBlock, ResetResult
from service.billing.budgets import Billing, ensure_within_budget
from service.chat.service import RESET_HOLDER, ChatService
from service.clients.errors import UpstreamError
from service.clients.letta import LettaClient
from service.errors import DomainError
from service.provisioning import store as provisioning_store
from service.provisioning.store import LostClaim
from service.users.profiles import ProfileRow, ReadyProfile

logger = logging.getLogger("service.agents")


def agent_unreachable(exc: UpstreamError) -> DomainError:
    logger.warning("letta call failed", extra={"error": str(exc)})
    return DomainError("agent_unavailable", "the agent service is unreachable right now; retry shortly")


class AgentService:
    def __init__(self, letta: LettaClient, lifecycle: AgentLifecycle, chat: ChatService, billing: Billing) -> None:
        self.letta = letta
        self.billing = billing
        self.lifecycle = lifecycle
        self.chat = chat

    async def status(self, profile: ProfileRow) -> AgentStatus:
        health = (await self.letta.health())["letta"]
        agent_found = None
        if health["ok"] and profile.letta_agent_id:
            try:
                agent_found = await self.letta.get_agent(profile.letta_agent_id) is not None
            except UpstreamError:
                agent_found = None
        return AgentStatus(
            agent_status=profile.agent_status,
            agent_id=profile.letta_agent_id,
            model=profile.model,
            last_active_at=profile.last_active_at,
            provisioning_attempts=profile.provisioning_attempts,
            letta=LettaStatus(reachable=health["ok"], latency_ms=health["latency_ms"], agent_found=agent_found),
        )

    async def memory(
        self, agent_id: str, query: str | None, top_k: int, user_id: uuid.UUID | None = None
    ) -> AgentMemory:
        """Core memory and the archival count; with ``query`` an archival search, refused over budget (it is work
        done for the user, embedded on the platform's key)."""
        if query and user_id is not None:
            await ensure_within_budget(self.billing, str(user_id))
        try:
            blocks = await self.letta.memory_blocks(agent_id)
            count = await self.letta.archival_count(agent_id)
            hits = await self.letta.archival_search(agent_id, query, top_k) if query else None
        except UpstreamError as exc:
            raise agent_unreachable(exc) from exc
        return AgentMemory(
            agent_id=agent_id,
            blocks=[MemoryBlock(b["label"], b["value"], b["limit"]) for b in blocks],
            archival_count=count,
            archival_results=[ArchivalHit(h["content"], h["timestamp"]) for h in hits] if hits is not None else None,
        )

    async def update_memory(self, agent_id: str, updates: dict[str, str]) -> AgentMemory:
        """Replace core memory blocks, each within the limit Letta has for it."""
        try:
            limits = {b["label"]: b["limit"] for b in await self.letta.memory_blocks(agent_id)}
            for label, value in updates.items():
                limit = limits.get(label)
                if limit is not None and len(value) > limit:
                    raise DomainError(
                        "memory_too_long",
                        f"{label} is {len(value)} characters; its limit is {limit}",
                        label=label,
                        limit=limit,
                    )
            for label, value in updates.items():
                await self.letta.update_block(agent_id, label, value)
        except UpstreamError as exc:
            raise agent_unreachable(exc) from exc
        return await self.memory(agent_id, None, 0)

    async def reset(self, profile: ReadyProfile, *, keep_memory: bool) -> ResetResult:
        """Replace the agent with a fresh one, under the chat lease (no turn may talk to an agent being
        replaced) and the provisioning claim (the only way ``letta_agent_id`` is written)."""
        lease = await self.chat.acquire_lease(profile.id, holder=RESET_HOLDER)
        try:
            claim = await provisioning_store.claim(self.lifecycle.db, profile.id, active=True)
            if claim is None:  # provisioning holds the profile: it is not ready for a reset
                raise DomainError("agent_not_ready", agent_status="provisioning")
            try:
                agent_id, kept = await self.lifecycle.replace(claim, keep_memory=keep_memory)
            finally:
                await provisioning_store.release(self.lifecycle.db, claim)
        except UpstreamError as exc:
            raise agent_unreachable(exc) from exc
        except LostClaim as exc:
            raise DomainError("agent_not_ready", agent_status="provisioning") from exc
        finally:
            await self.chat.release_lease(profile.id, lease)
        return ResetResult(agent_id=agent_id, previous_agent_id=claim.letta_agent_id, kept_memory=kept)
