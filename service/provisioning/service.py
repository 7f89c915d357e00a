"""Provisioning: one LiteLLM user + key, one Letta BYOK provider and one Letta agent per user.

An idempotent state machine stored in ``public.user_profiles``. Whoever wants a user provisioned (the
signup webhook, the reconciler, a request from a user who is not active yet) *claims* the profile with
a short lease; the claim id fences every later write, so a runner whose lease expired cannot overwrite
its successor. Every step first looks for what an earlier, interrupted attempt may have made:
- the LiteLLM key is stored privately the moment it exists, and a user LiteLLM already knows gets a
  new key instead of an error;
- the provider is found by its per-user name, the agent by its ``user:<id>`` tag (extra agents from a
  race are deleted, the oldest is kept).
No connection is held while Letta or LiteLLM is called.

Deletion is the mirror image: the ``auth.users`` delete trigger queues ``private.deprovisioning``
(which survives the cascade), and the same webhook path and reconciler drain it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

import asyncpg

from service.clients.base import UpstreamError
from service.clients.letta import LettaClient, provider_name
from service.clients.litellm import LiteLLMClient
from service.provisioning.agent_spec import agent_spec
from service.retry import with_retries
from service.settings import Settings

logger = logging.getLogger("service.provisioning")

LEASE_SECONDS = 120
FAILED_COOLDOWN_SECONDS = 600


class LostClaim(Exception):
    """Another runner owns the profile now (our lease expired), or the user was deleted."""


@dataclass(frozen=True, slots=True)
class Claim:
    user_id: uuid.UUID
    claim_id: uuid.UUID
    attempts: int
    email: str | None
    display_name: str | None
    letta_provider_id: str | None
    letta_agent_id: str | None


_CLAIM = """
update public.user_profiles
set agent_status = 'provisioning',
    provisioning_claim = gen_random_uuid(),
    provisioning_claimed_until = now() + make_interval(secs => $2),
    provisioning_attempts = provisioning_attempts + 1
where id = $1
  and agent_status <> 'active'
  and (provisioning_claimed_until is null or provisioning_claimed_until < now())
  and ($3 or next_provisioning_at <= now())
returning provisioning_claim, provisioning_attempts, email, display_name, letta_provider_id, letta_agent_id
"""

# Profiles for auth users whose trigger did not create one (e.g. users that existed before the migration).
_ENSURE_PROFILE = """
insert into public.user_profiles (id, email, display_name)
select u.id, u.email,
       coalesce(u.raw_user_meta_data ->> 'full_name', u.raw_user_meta_data ->> 'name',
                u.raw_user_meta_data ->> 'display_name')
from auth.users u where u.id = $1
on conflict (id) do nothing
"""


_STORED_KEY = "select litellm_key from private.litellm_keys where user_id = $1"


def _backoff_seconds(attempts: int) -> float:
    return min(60.0, 2.0**attempts) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto


class Provisioner:
    def __init__(self, db: asyncpg.Pool[Any], litellm: LiteLLMClient, letta: LettaClient, settings: Settings) -> None:
        self.db = db
        self.litellm = litellm
        self.letta = letta
        self.settings = settings
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}

    # -- entry points -----------------------------------------------------------------------------------
    def schedule(self, user_id: uuid.UUID, *, force: bool = True) -> None:
        """Provision in the background; a second call while one runs in this process is a no-op."""
        self._spawn(user_id, self.provision(user_id, force=force))

    def schedule_deprovision(self, user_id: uuid.UUID) -> None:
        self._spawn(user_id, self.deprovision(user_id))

    def _spawn(self, user_id: uuid.UUID, work: Any) -> None:
        if user_id in self._running:
            work.close()
            return
        task = asyncio.get_running_loop().create_task(work)
        self._running[user_id] = task
        task.add_done_callback(lambda _: self._running.pop(user_id, None))

    async def drain(self) -> None:
        """Cancel background work at shutdown; leases expire and the reconciler resumes it elsewhere."""
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def provision(self, user_id: uuid.UUID, *, force: bool = True) -> str:
        """Drive one user towards ``active``; returns the status it ended in (or was already in)."""
        await self.db.execute(_ENSURE_PROFILE, user_id)
        row = await self.db.fetchrow(_CLAIM, user_id, LEASE_SECONDS, force)
        if row is None:
            status = await self.db.fetchval("select agent_status from public.user_profiles where id = $1", user_id)
            return str(status) if status else "missing"
        claim = Claim(
            user_id,
            row["provisioning_claim"],
            row["provisioning_attempts"],
            row["email"],
            row["display_name"],
            row["letta_provider_id"],
            row["letta_agent_id"],
        )
        try:
            await self._run(claim)
        except LostClaim:
            logger.info("provisioning claim lost", extra={"user_id": str(user_id)})
            return "lost"
        except UpstreamError as exc:
            return await self._record_failure(claim, exc)
        logger.info("user provisioned", extra={"user_id": str(user_id), "attempts": claim.attempts})
        return "active"

    # -- the steps --------------------------------------------------------------------------------------
    async def _run(self, claim: Claim) -> None:
        uid = str(claim.user_id)
        key, new_key = await self._litellm_key(claim)
        provider_id = await self._provider(claim, key, new_key)
        agent_id = await self._agent(claim)
        await self._update(
            claim,
            "agent_status = 'active', provisioning_error = null, provisioning_attempts = 0, "
            "provisioning_claim = null, provisioning_claimed_until = null, letta_provider_id = $3, "
            "letta_agent_id = $4, model = $5, litellm_user_id = $6",
            provider_id,
            agent_id,
            self.settings.llm_model,
            uid,
        )

    async def _litellm_key(self, claim: Claim) -> tuple[str, bool]:
        stored = await self.db.fetchval(_STORED_KEY, claim.user_id)
        if stored:
            return str(stored), False
        s = self.settings
        key = await with_retries(
            lambda: self.litellm.ensure_user_key(
                str(claim.user_id), s.user_default_budget, s.user_budget_duration, claim.email
            )
        )
        # Store before anything else can fail: a retry must reuse this key, not mint another.
        await self.db.execute(
            "insert into private.litellm_keys (user_id, litellm_key) values ($1, $2) on conflict (user_id) do nothing",
            claim.user_id,
            key,
        )
        await self._update(claim, "litellm_user_id = $3", str(claim.user_id))
        winner = await self.db.fetchval(_STORED_KEY, claim.user_id)
        return str(winner), winner == key

    async def _provider(self, claim: Claim, key: str, new_key: bool) -> str:
        name = provider_name(str(claim.user_id))
        endpoint = self.litellm.openai_base_url
        provider = None
        if claim.letta_provider_id:
            provider = await with_retries(lambda: self.letta.get_provider(claim.letta_provider_id or ""))
        if provider is None:
            provider = await with_retries(lambda: self.letta.find_provider(name))
        if provider is None:
            provider = await with_retries(lambda: self.letta.create_provider(name, key, endpoint))
        elif new_key:
            # The provider outlived the key it was made with (the key was re-minted): give it the new one.
            await with_retries(lambda: self.letta.update_provider_key(str(provider["id"]), key, endpoint))
        provider_id = str(provider["id"])
        await self._update(claim, "letta_provider_id = $3", provider_id)
        return provider_id

    async def _agent(self, claim: Claim) -> str:
        uid = str(claim.user_id)
        agents = await with_retries(lambda: self.letta.agents_of(uid))
        if agents:
            keep = next((a for a in agents if a.id == claim.letta_agent_id), agents[0])
            for extra in agents:
                if extra.id != keep.id:
                    logger.warning("deleting duplicate agent", extra={"user_id": uid, "agent_id": extra.id})
                    await with_retries(partial(self.letta.delete_agent, extra.id))
            agent_id = str(keep.id)
        else:
            spec = agent_spec(self.settings, uid, claim.display_name, provider_name(uid), self.litellm.openai_base_url)
            agent = await with_retries(lambda: self.letta.create_agent(spec))
            agent_id = str(agent.id)
        await self._update(claim, "letta_agent_id = $3", agent_id)
        return agent_id

    async def _update(self, claim: Claim, assignments: str, *values: Any) -> None:
        """A write fenced by our claim; ``LostClaim`` if someone else owns the row now."""
        result = await self.db.execute(
            f"update public.user_profiles set {assignments} where id = $1 and provisioning_claim = $2",  # noqa: S608
            claim.user_id,
            claim.claim_id,
            *values,
        )
        if result == "UPDATE 0":
            if not await self.db.fetchval("select exists(select 1 from auth.users where id = $1)", claim.user_id):
                # Deleted while we were creating things, perhaps after its clean-up already ran: queue the
                # clean-up again so the reconciler removes what this attempt made (found by name and tag).
                await self.db.execute(
                    "insert into private.deprovisioning (user_id) values ($1) on conflict (user_id) do nothing",
                    claim.user_id,
                )
            raise LostClaim

    async def _record_failure(self, claim: Claim, exc: UpstreamError) -> str:
        exhausted = claim.attempts >= self.settings.provisioning_max_attempts
        status = "failed" if (exhausted or not exc.transient) else "pending"
        delay = FAILED_COOLDOWN_SECONDS if status == "failed" else _backoff_seconds(claim.attempts)
        await self.db.execute(
            "update public.user_profiles set agent_status = $3, provisioning_error = $4, provisioning_claim = null, "
            "provisioning_claimed_until = null, next_provisioning_at = now() + make_interval(secs => $5) "
            "where id = $1 and provisioning_claim = $2",
            claim.user_id,
            claim.claim_id,
            status,
            str(exc)[:1000],
            delay,
        )
        logger.warning(
            "provisioning failed",
            extra={"user_id": str(claim.user_id), "status": status, "attempts": claim.attempts, "error": str(exc)},
        )
        return status

    # -- deletion ---------------------------------------------------------------------------------------
    async def deprovision(self, user_id: uuid.UUID) -> bool:
        """Remove the user's agent(s), provider and LiteLLM user; True when nothing is left to do."""
        row = await self.db.fetchrow(
            "update private.deprovisioning set claimed_until = now() + make_interval(secs => $2), "
            "attempts = attempts + 1 where user_id = $1 and (claimed_until is null or claimed_until < now()) "
            "returning letta_agent_id, letta_provider_id",
            user_id,
            LEASE_SECONDS,
        )
        if row is None:
            return not await self.db.fetchval(
                "select exists(select 1 from private.deprovisioning where user_id = $1)", user_id
            )
        uid = str(user_id)
        try:
            agent_ids = {a.id for a in await with_retries(lambda: self.letta.agents_of(uid))}
            agent_ids.discard(None)
            if row["letta_agent_id"]:
                agent_ids.add(row["letta_agent_id"])
            for agent_id in agent_ids:
                await with_retries(partial(self.letta.delete_agent, agent_id))
            provider = await with_retries(lambda: self.letta.find_provider(provider_name(uid)))
            provider_ids = {row["letta_provider_id"], provider["id"] if provider else None} - {None}
            for provider_id in provider_ids:
                await with_retries(partial(self.letta.delete_provider, str(provider_id)))
            await with_retries(lambda: self.litellm.delete_user(uid))
        except UpstreamError as exc:
            await self.db.execute(
                "update private.deprovisioning set claimed_until = null, last_error = $2, "
                "next_attempt_at = now() + make_interval(secs => $3) where user_id = $1",
                user_id,
                str(exc)[:1000],
                _backoff_seconds(3),
            )
            logger.warning("deprovisioning failed", extra={"user_id": uid, "error": str(exc)})
            return False
        await self.db.execute("delete from private.deprovisioning where user_id = $1", user_id)
        logger.info("user deprovisioned", extra={"user_id": uid})
        return True

    # -- reconciler -------------------------------------------------------------------------------------
    async def reconcile_once(self, batch: int = 20) -> int:
        """Re-drive due profiles and deletions; safe with several replicas (claims decide who works)."""
        due = await self.db.fetch(
            "select id from public.user_profiles where agent_status <> 'active' and next_provisioning_at <= now() "
            "and (provisioning_claimed_until is null or provisioning_claimed_until < now()) "
            "order by next_provisioning_at limit $1",
            batch,
        )
        deletions = await self.db.fetch(
            "select user_id from private.deprovisioning where next_attempt_at <= now() "
            "and (claimed_until is null or claimed_until < now()) order by next_attempt_at limit $1",
            batch,
        )
        for row in due:
            await self.provision(row["id"], force=False)
        for row in deletions:
            await self.deprovision(row["user_id"])
        return len(due) + len(deletions)

    async def run_reconciler(self, stop: asyncio.Event) -> None:
        interval = self.settings.reconcile_interval_seconds
        while not stop.is_set():
            try:
                await self.reconcile_once()
            except (OSError, asyncpg.PostgresError) as exc:
                logger.warning("reconciler pass failed", extra={"error": str(exc)})
            # Jittered so replicas do not scan in lockstep.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval * random.uniform(0.8, 1.2))  # noqa: S311
