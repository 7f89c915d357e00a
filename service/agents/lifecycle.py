"""A user's Letta agent from birth to deletion, in one place: provisioning, reset and account deletion use it.

Every write of ``letta_agent_id`` is fenced by a provisioning claim (``service.provisioning.store``), so a
runner whose claim expired cannot record an agent over its successor's. Agents are found by the user's tag,
so whatever an interrupted attempt made is found again: extras are deleted, the oldest (or the recorded
one) is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from service.agents.spec import EDITABLE_BLOCKS, agent_spec, provider_name, user_tag
from service.clients.letta import LettaClient
from service.clients.retry import with_retries
from service.db import Database
from service.provisioning.store import Claim, fenced_update
from service.settings import Settings

logger = logging.getLogger("service.agents")

# Makes an agent from its spec (``agent_spec``'s keyword arguments) some other way than a plain create, e.g. from
# an export (service.agents.export); returns its id.
AgentMaker = Callable[[dict[str, Any]], Awaitable[str]]


class AgentLifecycle:
    def __init__(self, db: Database, letta: LettaClient, llm_endpoint: str, settings: Settings) -> None:
        self.db = db
        self.letta = letta
        self.llm_endpoint = llm_endpoint  # LiteLLM's OpenAI-compatible endpoint, called with the user's key
        self.settings = settings

    async def agents_of(self, user_id: str) -> list[Any]:
        return await with_retries(lambda: self.letta.agents_tagged(user_tag(user_id)))

    async def _create(self, claim: Claim, blocks: dict[str, str] | None = None, make: AgentMaker | None = None) -> str:
        uid = str(claim.user_id)
        spec = agent_spec(self.settings, uid, claim.display_name, provider_name(uid), self.llm_endpoint, blocks)
        if make is not None:
            return await make(spec)
        agent = await with_retries(lambda: self.letta.create_agent(spec))
        return str(agent.id)

    async def _delete(self, agent_id: str) -> None:
        await with_retries(partial(self.letta.delete_agent, agent_id))

    async def ensure(self, claim: Claim) -> str:
        """The user's one agent: adopted if an earlier attempt made it (duplicates of a race deleted), else
        created; recorded under the claim. Returns its id."""
        uid = str(claim.user_id)
        agents = await self.agents_of(uid)
        if agents:
            keep = next((a for a in agents if a.id == claim.letta_agent_id), agents[0])
            for extra in agents:
                if extra.id != keep.id:
                    logger.warning("deleting duplicate agent", extra={"user_id": uid, "agent_id": extra.id})
                    await self._delete(extra.id)
            agent_id = str(keep.id)
        else:
            agent_id = await self._create(claim)
        await fenced_update(self.db, claim, "letta_agent_id = $3", agent_id)
        return agent_id

    async def replace(
        self,
        claim: Claim,
        *,
        keep_memory: bool = False,
        blocks: dict[str, str] | None = None,
        make: AgentMaker | None = None,
    ) -> tuple[str, bool]:
        """A new agent in place of the current one, recorded under the claim, then the old one deleted (if it still
        exists). Core memory is the current agent's (``keep_memory``), or ``blocks``, or the spec's; ``make``
        creates the agent from its spec (a rebuild from an export) instead of a plain create. Returns (new agent
        id, whether memory was carried over). Retry-safe."""
        uid, current = str(claim.user_id), claim.letta_agent_id
        # Leftovers of an interrupted reset (a new agent never recorded, or an old one never deleted).
        for stray in await self.agents_of(uid):
            if stray.id != current:
                await self._delete(stray.id)
        if keep_memory and current:
            blocks = {
                b["label"]: b["value"]
                for b in await with_retries(lambda: self.letta.memory_blocks(current))
                if b["label"] in EDITABLE_BLOCKS
            }
        agent_id = await self._create(claim, blocks, make)
        await fenced_update(self.db, claim, "letta_agent_id = $3", agent_id)
        if current:
            await self._delete(current)
        logger.info("agent replaced", extra={"user_id": uid, "agent_id": agent_id, "previous": current})
        return agent_id, blocks is not None

    async def delete_all(self, user_id: str, known_agent_id: str | None) -> None:
        """Delete every agent of a user who is gone (no claim: the profile no longer exists)."""
        agent_ids = {a.id for a in await self.agents_of(user_id)} - {None}
        if known_agent_id:
            agent_ids.add(known_agent_id)
        for agent_id in agent_ids:
            await self._delete(agent_id)
