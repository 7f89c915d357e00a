"""The provisioning SQL: claims on ``public.user_profiles``, writes fenced by them, the key, the deletion queue.

A claim is a short lease on a profile with a fresh id; every later write names that id, so a runner whose
lease expired cannot overwrite its successor (``LostClaim``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from service.db import Database

CLAIM_SECONDS = 120


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


# Provisioning claims a profile that is not active; ``$3`` (force) ignores its schedule.
_CLAIM_FOR_PROVISIONING = """
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

# An agent reset claims an active profile (its status stays active: chat is held off by the chat lease).
_CLAIM_ACTIVE = """
update public.user_profiles
set provisioning_claim = gen_random_uuid(),
    provisioning_claimed_until = now() + make_interval(secs => $2)
where id = $1
  and agent_status = 'active'
  and (provisioning_claimed_until is null or provisioning_claimed_until < now())
returning provisioning_claim, provisioning_attempts, email, display_name, letta_provider_id, letta_agent_id
"""

# Profiles for auth users whose trigger did not create one (e.g. users that existed before the migration). The
# display name is chosen as the signup trigger chooses it (migration 20261121000000).
ENSURE_PROFILE = """
insert into public.user_profiles (id, email, display_name)
select u.id, u.email,
       coalesce(u.raw_user_meta_data ->> 'full_name', u.raw_user_meta_data ->> 'name',
                u.raw_user_meta_data ->> 'display_name')
from auth.users u where u.id = $1
on conflict (id) do nothing
"""

IS_ANONYMOUS = "select is_anonymous from auth.users where id = $1"
STORED_KEY = "select litellm_key from private.litellm_keys where user_id = $1"
STORE_KEY = "insert into private.litellm_keys (user_id, litellm_key) values ($1, $2) on conflict (user_id) do nothing"
AGENT_STATUS = "select agent_status from public.user_profiles where id = $1"

# A failed attempt: the status and the next attempt's time on the profile, the upstream's words privately.
RECORD_FAILURE = """
with profile as (
    update public.user_profiles set agent_status = $3, provisioning_claim = null,
        provisioning_claimed_until = null, next_provisioning_at = now() + make_interval(secs => $5)
    where id = $1 and provisioning_claim = $2
    returning id
)
insert into private.provisioning_errors (user_id, detail)
select id, $4 from profile
on conflict (user_id) do update set detail = excluded.detail, recorded_at = now()
"""

CLEAR_FAILURE = "delete from private.provisioning_errors where user_id = $1"

DUE_PROFILES = """
select id from public.user_profiles where agent_status <> 'active' and next_provisioning_at <= now()
  and (provisioning_claimed_until is null or provisioning_claimed_until < now())
order by next_provisioning_at limit $1
"""

# -- deletion: private.deprovisioning outlives the profile (the auth.users delete trigger fills it) ----------
CLAIM_DELETION = """
update private.deprovisioning set claimed_until = now() + make_interval(secs => $2), attempts = attempts + 1
where user_id = $1 and (claimed_until is null or claimed_until < now())
returning letta_agent_id, letta_provider_id
"""
DELETION_QUEUED = "select exists(select 1 from private.deprovisioning where user_id = $1)"
DELETION_FAILED = """
update private.deprovisioning set claimed_until = null, last_error = $2,
    next_attempt_at = now() + make_interval(secs => $3)
where user_id = $1
"""
DELETION_DONE = "delete from private.deprovisioning where user_id = $1"
QUEUE_DELETION = "insert into private.deprovisioning (user_id) values ($1) on conflict (user_id) do nothing"
DUE_DELETIONS = """
select user_id from private.deprovisioning where next_attempt_at <= now()
  and (claimed_until is null or claimed_until < now())
order by next_attempt_at limit $1
"""


async def claim(db: Database, user_id: uuid.UUID, *, force: bool = False, active: bool = False) -> Claim | None:
    """Claim the profile for provisioning (``active=False``) or for replacing an active user's agent."""
    if active:
        row = await db.fetchrow(_CLAIM_ACTIVE, user_id, CLAIM_SECONDS)
    else:
        row = await db.fetchrow(_CLAIM_FOR_PROVISIONING, user_id, CLAIM_SECONDS, force)
    if row is None:
        return None
    return Claim(
        user_id,
        row["provisioning_claim"],
        row["provisioning_attempts"],
        row["email"],
        row["display_name"],
        row["letta_provider_id"],
        row["letta_agent_id"],
    )


async def fenced_update(db: Database, claim: Claim, assignments: str, *values: Any) -> None:
    """A write fenced by ``claim`` (``$1`` user, ``$2`` claim; ``values`` from ``$3``); ``LostClaim`` if someone else
    owns the row now."""
    result = await db.execute(
        f"update public.user_profiles set {assignments} where id = $1 and provisioning_claim = $2",  # noqa: S608
        claim.user_id,
        claim.claim_id,
        *values,
    )
    if result == "UPDATE 0":
        if not await db.fetchval("select exists(select 1 from auth.users where id = $1)", claim.user_id):
            # Deleted while we were creating things, perhaps after its clean-up already ran: queue the clean-up
            # again so the reconciler removes what this attempt made (found by name and tag).
            await db.execute(QUEUE_DELETION, claim.user_id)
        raise LostClaim


async def release(db: Database, claim: Claim) -> None:
    """Give up a claim without changing anything else."""
    await db.execute(
        "update public.user_profiles set provisioning_claim = null, provisioning_claimed_until = null "
        "where id = $1 and provisioning_claim = $2",
        claim.user_id,
        claim.claim_id,
    )
