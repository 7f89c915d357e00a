"""The caller's own agent: its status, its memory, its export, and replacing it; and an admin's rebuild of a
user's agent from an export.

Ownership: the agent id always comes from the caller's profile, never from the request, so a user can reach
no agent but their own (Letta itself does not isolate users within one organisation). The rebuild, which names
a user, is for admins only (``service.agents.admin_controller``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TypeVar

from service.agents import store
from service.agents.export import agent_export, rebuild_agent, rebuild_plan
from service.agents.lifecycle import AgentLifecycle
from service.agents.schemas import (
    AgentExport,
    AgentMemory,
    AgentStatus,
    ArchivalHit,
    LettaStatus,
    MemoryBlock,
    RebuildResult,
    ResetResult,
)
from service.billing.budgets import Billing, ensure_within_budget
from service.chat import store as chat_store
from service.chat.service import LEASE_RENEW_SECONDS, RESET_HOLDER, ChatService
from service.clients.errors import UpstreamError
from service.clients.letta import LettaClient
from service.errors import DomainError
from service.provisioning import store as provisioning_store
from service.provisioning.service import Provisioner
from service.provisioning.store import Claim, LostClaim
from service.users.profiles import ProfileRow, ReadyProfile

logger = logging.getLogger("service.agents")
T = TypeVar("T")


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

    async def update_memory(self, profile: ReadyProfile, updates: dict[str, str]) -> AgentMemory:
        """Replace core memory blocks, each within the limit Letta has for it."""
        agent_id = profile.agent_id
        sent = False
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
            # Bumped before Letta has the edit, so that a database that fails after it cannot leave the threads
            # stale for good (a database that fails here stops the edit before Letta has it) ...
            await self.lifecycle.db.execute(store.MEMORY_EDITED, profile.id)
            for label, value in updates.items():
                sent = True
                await self.letta.update_block(agent_id, label, value)
        except UpstreamError as exc:
            raise agent_unreachable(exc) from exc
        finally:
            if sent:
                # ... and after it, so that a turn that began meanwhile and compiled the memory before the edit
                # does not count as compiled at the newest version; after a failure too: a block may have changed.
                await self.lifecycle.db.execute(store.MEMORY_EDITED, profile.id)
        return await self.memory(agent_id, None, 0)

    async def reset(self, profile: ReadyProfile, *, keep_memory: bool) -> ResetResult:
        """Replace the agent with a fresh one."""
        (agent_id, kept), previous = await self._replacing(
            profile.id, lambda claim: self.lifecycle.replace(claim, keep_memory=keep_memory)
        )
        return ResetResult(agent_id=agent_id, previous_agent_id=previous, kept_memory=kept)

    async def export(self, profile: ReadyProfile) -> AsyncIterator[bytes]:
        """The agent as our neutral JSON export (``service.agents.export``), streamed."""
        try:
            return await agent_export(self.letta, profile.id, profile.agent_id)
        except UpstreamError as exc:
            raise agent_unreachable(exc) from exc

    async def rebuild(self, user_id: uuid.UUID, export: AgentExport, provisioner: Provisioner) -> RebuildResult:
        """Replace the user's agent (lost, or on another Letta server) with one rebuilt from ``export`` on the
        configured Letta server; its BYOK provider is made there first if missing."""
        plan = rebuild_plan(export, user_id)

        async def work(claim: Claim) -> str:
            await provisioner.ensure_provider(claim)
            try:
                agent_id, _ = await self.lifecycle.replace(
                    claim, blocks=plan.blocks, make=partial(rebuild_agent, self.letta, plan)
                )
            except UpstreamError as exc:
                if exc.transient:
                    raise
                logger.warning("letta refused a rebuild", extra={"user_id": str(user_id), "error": str(exc)})
                raise DomainError("rebuild_refused") from exc
            return agent_id

        agent_id, previous = await self._replacing(user_id, work)
        return RebuildResult(
            user_id=user_id,
            agent_id=agent_id,
            previous_agent_id=previous,
            blocks=len(plan.blocks),
            passages=len(plan.passages),
            messages=plan.replayed,
            in_context=plan.in_context,
            skipped_messages=plan.skipped,
        )

    async def _replacing(self, user_id: uuid.UUID, work: Callable[[Claim], Awaitable[T]]) -> tuple[T, str | None]:
        """``work`` (which replaces the agent) under the chat lease (no turn may talk to an agent being replaced)
        and the provisioning claim (the only way ``letta_agent_id`` is written); with the agent id it replaced."""
        lease = await self.chat.acquire_lease(user_id, holder=RESET_HOLDER)
        keeper = asyncio.create_task(self._keep_lease(user_id, lease))
        try:
            claim = await provisioning_store.claim(self.lifecycle.db, user_id, active=True)
            if claim is None:  # provisioning holds the profile: it is not ready to be replaced
                raise DomainError("agent_not_ready", agent_status="provisioning")
            try:
                result = await work(claim)
            finally:
                await provisioning_store.release(self.lifecycle.db, claim)
        except UpstreamError as exc:
            raise agent_unreachable(exc) from exc
        except LostClaim as exc:
            raise DomainError("agent_not_ready", agent_status="provisioning") from exc
        finally:
            keeper.cancel()
            await self.chat.release_lease(user_id, lease)
        return result, claim.letta_agent_id

    async def _keep_lease(self, user_id: uuid.UUID, lease: uuid.UUID) -> None:
        """Renew the chat lease while an agent is replaced: a rebuild with many passages outlasts it. (The claim
        needs no renewal: whoever else would claim an active profile takes this lease first.)"""
        while True:
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            try:
                await self.lifecycle.db.execute(chat_store.RENEW_LEASE, user_id, lease, chat_store.LEASE_SECONDS, None)
            except Exception as exc:  # the next renewal may work
                logger.warning("lease renewal failed", extra={"user_id": str(user_id), "error": repr(exc)})
