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
import logging
import uuid
from functools import partial
from typing import Any

from service.agents.lifecycle import AgentLifecycle
from service.agents.spec import provider_name
from service.background import every
from service.clients.errors import UpstreamError
from service.clients.letta import LettaClient
from service.clients.litellm import LiteLLMClient
from service.clients.retry import backoff_delay, with_retries
from service.db import Database
from service.provisioning import store
from service.provisioning.store import Claim, LostClaim
from service.settings import Settings

logger = logging.getLogger("service.provisioning")

FAILED_COOLDOWN_SECONDS = 600


def _backoff_seconds(attempts: int) -> float:
    """The wait before the next attempt: doubling up to a minute, jittered so replicas spread out."""
    return backoff_delay(attempts + 1, 1.0, 60.0, floor=0.5)


class AnonymousRefused(Exception):
    """An anonymous user, and ANONYMOUS_USERS=refuse."""


class Provisioner:
    def __init__(
        self,
        db: Database,
        litellm: LiteLLMClient,
        letta: LettaClient,
        settings: Settings,
        agents: AgentLifecycle | None = None,
    ) -> None:
        self.db = db
        self.litellm = litellm
        self.letta = letta
        self.settings = settings
        self.agents = agents or AgentLifecycle(db, letta, litellm.openai_base_url, settings)
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}

    # -- entry points -----------------------------------------------------------------------------------
    def schedule(self, user_id: uuid.UUID) -> None:
        """Provision now, whatever the schedule (a signup webhook); a second call while one runs here is a no-op."""
        self._spawn(user_id, self.provision(user_id, force=True))

    def nudge(self, user_id: uuid.UUID) -> None:
        """Provision if an attempt is due (a request from a user who is not active yet): it never bypasses the
        backoff or the failed cooldown, so polling clients cannot turn into a storm of attempts."""
        self._spawn(user_id, self.provision(user_id, force=False))

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
        await self.db.execute(store.ENSURE_PROFILE, user_id)
        claim = await store.claim(self.db, user_id, force=force)
        if claim is None:
            status = await self.db.fetchval(store.AGENT_STATUS, user_id)
            return str(status) if status else "missing"
        try:
            await self._run(claim)
        except LostClaim:
            logger.info("provisioning claim lost", extra={"user_id": str(user_id)})
            return "lost"
        except UpstreamError as exc:
            return await self._record_failure(claim, exc)
        except AnonymousRefused:
            # ANONYMOUS_USERS=refuse: nothing is created. A user who links an identity (no longer anonymous) is
            # provisioned by the reconciler after the cooldown.
            return await self._record_failure(
                claim, UpstreamError("service", "anonymous users are refused", transient=False)
            )
        await self.db.execute(store.CLEAR_FAILURE, user_id)
        logger.info("user provisioned", extra={"user_id": str(user_id), "attempts": claim.attempts})
        return "active"

    # -- the steps --------------------------------------------------------------------------------------
    async def _run(self, claim: Claim) -> None:
        uid = str(claim.user_id)
        provider_id = await self.ensure_provider(claim)
        agent_id = await self.agents.ensure(claim)
        await self._update(
            claim,
            "agent_status = 'active', provisioning_attempts = 0, "
            "provisioning_claim = null, provisioning_claimed_until = null, letta_provider_id = $3, "
            "letta_agent_id = $4, model = $5, litellm_user_id = $6",
            provider_id,
            agent_id,
            self.settings.llm_model,
            uid,
        )

    async def ensure_provider(self, claim: Claim) -> str:
        """The user's LiteLLM key and BYOK provider on the configured Letta, each made if missing (also before an
        agent is rebuilt on another Letta server), recorded under the claim. Returns the provider's id."""
        key, new_key = await self._litellm_key(claim)
        return await self._provider(claim, key, new_key)

    async def _litellm_key(self, claim: Claim) -> tuple[str, bool]:
        stored = await self.db.fetchval(store.STORED_KEY, claim.user_id)
        if stored:
            return str(stored), False
        s = self.settings
        anonymous = bool(await self.db.fetchval(store.IS_ANONYMOUS, claim.user_id))
        if anonymous and s.anonymous_users == "refuse":
            raise AnonymousRefused
        budget = s.anonymous_budget if anonymous else s.user_default_budget
        key = await with_retries(
            lambda: self.litellm.ensure_user_key(str(claim.user_id), budget, s.user_budget_duration, claim.email)
        )
        # Store before anything else can fail: a retry must reuse this key, not mint another.
        await self.db.execute(store.STORE_KEY, claim.user_id, key)
        await self._update(claim, "litellm_user_id = $3", str(claim.user_id))
        winner = await self.db.fetchval(store.STORED_KEY, claim.user_id)
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

    async def _update(self, claim: Claim, assignments: str, *values: Any) -> None:
        await store.fenced_update(self.db, claim, assignments, *values)

    async def _record_failure(self, claim: Claim, exc: UpstreamError) -> str:
        exhausted = claim.attempts >= self.settings.provisioning_max_attempts
        status = "failed" if (exhausted or not exc.transient) else "pending"
        delay = FAILED_COOLDOWN_SECONDS if status == "failed" else _backoff_seconds(claim.attempts)
        await self.db.execute(
            store.RECORD_FAILURE,
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
        row = await self.db.fetchrow(store.CLAIM_DELETION, user_id, store.CLAIM_SECONDS)
        if row is None:
            return not await self.db.fetchval(store.DELETION_QUEUED, user_id)
        uid = str(user_id)
        try:
            await self.agents.delete_all(uid, row["letta_agent_id"])
            provider = await with_retries(lambda: self.letta.find_provider(provider_name(uid)))
            provider_ids = {row["letta_provider_id"], provider["id"] if provider else None} - {None}
            for provider_id in provider_ids:
                await with_retries(partial(self.letta.delete_provider, str(provider_id)))
            await with_retries(lambda: self.litellm.delete_user(uid))
        except UpstreamError as exc:
            await self.db.execute(
                store.DELETION_FAILED,
                user_id,
                str(exc)[:1000],
                _backoff_seconds(3),
            )
            logger.warning("deprovisioning failed", extra={"user_id": uid, "error": str(exc)})
            return False
        await self.db.execute(store.DELETION_DONE, user_id)
        logger.info("user deprovisioned", extra={"user_id": uid})
        return True

    # -- reconciler -------------------------------------------------------------------------------------
    async def reconcile_once(self, batch: int = 20) -> int:
        """Re-drive due profiles and deletions; safe with several replicas (claims decide who works)."""
        due = await self.db.fetch(store.DUE_PROFILES, batch)
        deletions = await self.db.fetch(store.DUE_DELETIONS, batch)
        for row in due:
            await self.provision(row["id"], force=False)
        for row in deletions:
            await self.deprovision(row["user_id"])
        return len(due) + len(deletions)

    async def run_reconciler(self, stop: asyncio.Event) -> None:
        await every(self.settings.reconcile_interval_seconds, stop, self.reconcile_once, logger, "reconciler")
