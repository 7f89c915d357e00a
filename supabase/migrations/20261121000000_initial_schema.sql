-- Initial schema: profiles, chat history, daily usage, and the private state the service keeps.
--
-- Applies to a real Supabase project (auth.users, the API roles and, when enabled from the dashboard,
-- pg_net already exist there) and to a local database prepared by devstack/supabase_bootstrap.sql.
-- Valid on PostgreSQL 15+.
--
-- Who does what:
--   * the frontend (supabase-js -> PostgREST, role `authenticated`) only READS its own rows (RLS);
--   * the service connects as `postgres` (BYPASSRLS on Supabase, superuser locally) and does all writes;
--   * GoTrue (role supabase_auth_admin) inserts/deletes auth.users; our triggers run SECURITY DEFINER.
-- No secret is written here: the webhook URL and secret go into private.webhook_config at deploy time.

-- ===================================================================== private schema
-- Not in [api] schemas (supabase/config.toml), and no privileges for the API roles: PostgREST
-- cannot reach it even if it were exposed by mistake.
create schema if not exists private;
revoke all on schema private from public, anon, authenticated;

-- Shared updated_at trigger.
create or replace function private.set_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end;
$$;

-- ===================================================================== public.user_profiles
-- One row per auth user, created by the signup trigger below. agent_status drives provisioning:
-- the service claims a row (provisioning_claimed_until) and the reconciler retries any row still
-- pending/failed whose next_provisioning_at has passed, so a lost webhook loses no user.
create table public.user_profiles (
  id                         uuid primary key references auth.users (id) on delete cascade,
  email                      text,
  display_name               text,
  agent_status               text not null default 'pending'
                             check (agent_status in ('pending', 'provisioning', 'active', 'failed')),
  provisioning_attempts      integer not null default 0,
  provisioning_error         text,
  provisioning_claimed_until timestamptz,
  next_provisioning_at       timestamptz not null default now(),
  letta_agent_id             text unique,
  letta_provider_id          text unique,
  litellm_user_id            text unique,
  model                      text,
  last_active_at             timestamptz,
  created_at                 timestamptz not null default now(),
  updated_at                 timestamptz not null default now()
);
comment on table public.user_profiles is
  'One per auth user. Readable by its owner (RLS); written only by the service and the signup trigger.';

-- The reconciler's scan: profiles not yet active, by due time.
create index user_profiles_reconcile_idx
  on public.user_profiles (next_provisioning_at)
  where agent_status <> 'active';

create trigger user_profiles_set_updated_at
  before update on public.user_profiles
  for each row execute function private.set_updated_at();

-- ===================================================================== public.messages
-- Chat history for the UI. A turn = the user's message + the assistant's reply (same turn_id); the
-- user's message is inserted 'pending' before the agent is called, and the reply is inserted when the
-- turn ends (complete, failed or cancelled), together with the user's message's final status.
create table public.messages (
  id                uuid primary key default gen_random_uuid(),
  user_id           uuid not null references public.user_profiles (id) on delete cascade,
  turn_id           uuid not null,
  role              text not null check (role in ('user', 'assistant')),
  content           text not null,
  status            text not null default 'complete'
                    check (status in ('pending', 'complete', 'failed', 'cancelled')),
  error             text,
  prompt_tokens     integer,
  completion_tokens integer,
  tokens_used       integer,        -- total tokens (the seed's name)
  cost              numeric(12, 8), -- USD
  model             text,
  letta_run_id      text,
  letta_message_id  text,
  -- clock_timestamp(), not now(): a turn's two rows written in one transaction still order correctly.
  created_at        timestamptz not null default clock_timestamp()
);

-- History paging (keyset on created_at, id) and the RLS filter on user_id.
create index messages_user_id_created_at_idx on public.messages (user_id, created_at desc, id desc);
create index messages_turn_id_idx on public.messages (turn_id);

-- ===================================================================== public.usage_metrics
-- Per-user daily totals, upserted by the service on (user_id, date) when a turn completes.
create table public.usage_metrics (
  id                uuid primary key default gen_random_uuid(),
  user_id           uuid not null references public.user_profiles (id) on delete cascade,
  date              date not null default current_date,
  total_messages    integer not null default 0,
  prompt_tokens     bigint not null default 0,
  completion_tokens bigint not null default 0,
  total_tokens      bigint not null default 0,
  total_cost        numeric(14, 8) not null default 0,
  updated_at        timestamptz not null default now(),
  -- also the index for the RLS filter on user_id (leading column)
  constraint usage_metrics_user_id_date_key unique (user_id, date)
);

create trigger usage_metrics_set_updated_at
  before update on public.usage_metrics
  for each row execute function private.set_updated_at();

-- ===================================================================== private tables
-- The user's LiteLLM virtual key: never readable by the frontend (no grants, no policies).
create table private.litellm_keys (
  user_id     uuid primary key references auth.users (id) on delete cascade,
  litellm_key text not null unique,
  created_at  timestamptz not null default now()
);

-- Where the auth.users triggers send webhooks, and the shared secret they send in x-webhook-secret.
-- At most one row. Set by the deployer with SQL, e.g.
--   insert into private.webhook_config (url, secret) values ('https://...', '...')
--   on conflict (id) do update set url = excluded.url, secret = excluded.secret;
-- With no row, signups still work and the service's reconciler provisions the users.
create table private.webhook_config (
  id         boolean primary key default true check (id),
  url        text not null,
  secret     text not null,
  updated_at timestamptz not null default now()
);

create trigger webhook_config_set_updated_at
  before update on private.webhook_config
  for each row execute function private.set_updated_at();

-- Deleted users whose external resources (Letta agent and provider, LiteLLM user and keys) still
-- have to be removed. No foreign key: the row must survive the auth.users cascade.
create table private.deprovisioning (
  user_id           uuid primary key,
  letta_agent_id    text,
  letta_provider_id text,
  litellm_user_id   text,
  attempts          integer not null default 0,
  last_error        text,
  next_attempt_at   timestamptz not null default now(),
  claimed_until     timestamptz,
  created_at        timestamptz not null default now()
);
create index deprovisioning_next_attempt_at_idx on private.deprovisioning (next_attempt_at);

-- ===================================================================== privileges
-- Supabase's default privileges grant ALL on new public tables to anon/authenticated/service_role.
-- Narrow them: the frontend only reads its own rows; anon has nothing to read at all. (TRUNCATE,
-- REFERENCES and TRIGGER are not subject to RLS, so they go too.)
revoke all on public.user_profiles, public.messages, public.usage_metrics from anon;
revoke insert, update, delete, truncate, references, trigger
  on public.user_profiles, public.messages, public.usage_metrics from authenticated;
grant select on public.user_profiles, public.messages, public.usage_metrics to authenticated;

revoke all on private.litellm_keys, private.webhook_config, private.deprovisioning
  from public, anon, authenticated;
revoke all on function private.set_updated_at() from public;

-- ===================================================================== row level security
-- Enabled on every table; FORCE as well, so even a table owner without BYPASSRLS would get no rows
-- without a policy. (`postgres` has BYPASSRLS on Supabase and is a superuser locally, so the
-- service and the SECURITY DEFINER triggers are unaffected.)
alter table public.user_profiles  enable row level security;
alter table public.user_profiles  force row level security;
alter table public.messages       enable row level security;
alter table public.messages       force row level security;
alter table public.usage_metrics  enable row level security;
alter table public.usage_metrics  force row level security;
alter table private.litellm_keys   enable row level security;
alter table private.litellm_keys   force row level security;
alter table private.webhook_config enable row level security;
alter table private.webhook_config force row level security;
alter table private.deprovisioning enable row level security;
alter table private.deprovisioning force row level security;

-- SELECT-only policies for signed-in users. `(select auth.uid())` is evaluated once per statement
-- (an initPlan), not per row. No INSERT/UPDATE/DELETE policies: only the service writes.
create policy user_profiles_select_own on public.user_profiles
  for select to authenticated
  using ((select auth.uid()) = id);

create policy messages_select_own on public.messages
  for select to authenticated
  using ((select auth.uid()) = user_id);

create policy usage_metrics_select_own on public.usage_metrics
  for select to authenticated
  using ((select auth.uid()) = user_id);

-- ===================================================================== webhook helper
-- Queues one webhook through pg_net if it is installed and configured. Never raises: a webhook is
-- only the fast path, and a failing trigger on auth.users would block signups (or deletions).
-- pg_net sends after COMMIT, so a rolled-back signup sends nothing.
create or replace function private.send_auth_webhook(payload jsonb)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  cfg record;
begin
  begin
    select c.url, c.secret into cfg from private.webhook_config as c where c.id;
    -- No config, or pg_net not enabled: nothing to send; the reconciler covers the user.
    if not found or to_regprocedure('net.http_post(text,jsonb,jsonb,jsonb,integer)') is null then
      return;
    end if;
    -- Dynamic call: this function must compile and run on databases without pg_net.
    execute 'select net.http_post(url := $1, body := $2, headers := $3, timeout_milliseconds := $4)'
      using cfg.url,
            payload,
            jsonb_build_object('Content-Type', 'application/json', 'x-webhook-secret', cfg.secret),
            5000;
  exception when others then
    raise warning 'auth webhook not queued (%): %', sqlstate, sqlerrm;
  end;
end;
$$;
revoke all on function private.send_auth_webhook(jsonb) from public;

-- ===================================================================== signup trigger
-- GoTrue inserts the user with role = '' and sets role = 'authenticated' in a later UPDATE of the
-- same transaction: nothing here looks at role. Kept tiny; only the profile insert may fail the
-- signup (a user without a profile would never be provisioned).
create or replace function private.handle_new_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  meta jsonb := coalesce(new.raw_user_meta_data, '{}'::jsonb);
begin
  insert into public.user_profiles (id, email, display_name)
  values (
    new.id,
    new.email,
    left(coalesce(nullif(btrim(meta ->> 'full_name'), ''),
                  nullif(btrim(meta ->> 'name'), ''),
                  nullif(btrim(meta ->> 'display_name'), '')), 200)
  )
  on conflict (id) do nothing;

  -- Trimmed Database-Webhook-shaped payload: the stock one would carry encrypted_password and tokens.
  perform private.send_auth_webhook(jsonb_build_object(
    'type', 'INSERT',
    'table', 'users',
    'schema', 'auth',
    'record', jsonb_build_object(
      'id', new.id,
      'email', new.email,
      'created_at', new.created_at,
      'raw_user_meta_data', jsonb_strip_nulls(jsonb_build_object(
        'full_name', meta -> 'full_name',
        'name', meta -> 'name',
        'display_name', meta -> 'display_name'))),
    'old_record', null));

  return new;
end;
$$;
revoke all on function private.handle_new_user() from public;

create trigger on_auth_user_created
  after insert on auth.users
  for each row execute function private.handle_new_user();

-- ===================================================================== deletion trigger
-- BEFORE DELETE, while the profile still exists: remember the external ids so the service can
-- remove the Letta agent/provider and the LiteLLM user after the cascade has deleted our rows.
-- A row is queued even without a profile or ids: an in-flight provisioning may have created
-- resources it had not recorded yet, and the service can look them up by user id.
create or replace function private.handle_deleted_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into private.deprovisioning (user_id, letta_agent_id, letta_provider_id, litellm_user_id)
  select old.id, p.letta_agent_id, p.letta_provider_id, p.litellm_user_id
  from (select) as one
  left join public.user_profiles as p on p.id = old.id
  on conflict (user_id) do nothing;

  perform private.send_auth_webhook(jsonb_build_object(
    'type', 'DELETE',
    'table', 'users',
    'schema', 'auth',
    'record', null,
    'old_record', jsonb_build_object('id', old.id, 'email', old.email, 'created_at', old.created_at)));

  return old;
end;
$$;
revoke all on function private.handle_deleted_user() from public;

create trigger on_auth_user_deleted
  before delete on auth.users
  for each row execute function private.handle_deleted_user();
