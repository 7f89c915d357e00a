-- Fencing token for provisioning claims.
--
-- A runner that claims a profile gets a fresh provisioning_claim; every write it makes afterwards
-- is conditioned on that value, so a runner whose lease (provisioning_claimed_until) expired while it
-- was still talking to Letta or LiteLLM cannot overwrite the work of the runner that took over.
alter table public.user_profiles add column if not exists provisioning_claim uuid;
