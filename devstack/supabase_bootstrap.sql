-- =====================================================================================================
-- LOCAL-ONLY Supabase-compatible bootstrap. NEVER apply this to a real Supabase project: there the
-- platform owns these roles, the `auth` schema (GoTrue), pg_net and `supabase_migrations`.
--
-- It gives a plain PostgreSQL 15+ database just enough of a Supabase project for our migrations,
-- pgTAP tests and local dev stack to run unchanged:
--   * the API roles (anon, authenticated, service_role, authenticator, supabase_auth_admin, ...)
--     and the grants/default privileges Supabase sets up for them;
--   * schema `auth` with GoTrue's `auth.users` and auth.uid()/auth.role()/auth.jwt();
--   * schema `extensions`;
--   * a pg_net stand-in (schema `net`); devstack/doubles/pgnet_relay.py performs the HTTP deliveries;
--   * supabase_migrations.schema_migrations, where the CLI (and devstack/migrate.py) records versions.
--
-- Idempotent: safe to run again on every start. Roles are cluster-wide, so role creation tolerates a
-- concurrent bootstrap of another database in the same cluster.
-- =====================================================================================================

-- ---------------------------------------------------------------- roles
-- As in supabase/postgres init-scripts/00000000000000-initial-schema.sql.
do $$
declare
  r record;
begin
  for r in
    select * from (values
      ('anon',                     'nologin noinherit'),
      ('authenticated',            'nologin noinherit'),
      ('service_role',             'nologin noinherit bypassrls'),
      ('authenticator',            'login noinherit'),
      ('supabase_auth_admin',      'login noinherit createrole'),
      ('supabase_functions_admin', 'login noinherit createrole')
    ) as t(name, options)
  loop
    if not exists (select 1 from pg_roles where rolname = r.name) then
      begin
        execute format('create role %I %s', r.name, r.options);
      exception when duplicate_object or unique_violation then
        null;  -- created concurrently by a bootstrap of another database in this cluster
      end;
    end if;
  end loop;
end
$$;

-- PostgREST logs in as authenticator and switches to the role named in the JWT.
grant anon, authenticated, service_role to authenticator;

-- On Supabase `postgres` is a member of the API roles (it may `set role` to them, as our pgTAP tests
-- do); locally it is usually a superuser anyway.
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'postgres') then
    grant anon, authenticated, service_role to postgres;
  end if;
end
$$;

-- Short statement timeouts for the API roles, as on Supabase. Role settings live in a shared
-- catalog: only write them when missing, so bootstraps of several databases can run at once.
do $$
declare
  r record;
begin
  for r in
    select * from (values
      ('anon', 'statement_timeout', '3s'),
      ('authenticated', 'statement_timeout', '8s'),
      ('supabase_auth_admin', 'search_path', 'auth')
    ) as t(role_name, setting, value)
  loop
    if not exists (
      select 1 from pg_db_role_setting s join pg_roles ro on ro.oid = s.setrole
      where s.setdatabase = 0 and ro.rolname = r.role_name
        and s.setconfig @> array[r.setting || '=' || r.value]
    ) then
      execute format('alter role %I set %s = %L', r.role_name, r.setting, r.value);
    end if;
  end loop;
end
$$;

-- ---------------------------------------------------------------- schemas and grants
create schema if not exists extensions;

grant usage on schema public to anon, authenticated, service_role;
grant usage on schema extensions to anon, authenticated, service_role;

-- Supabase grants ALL on new public tables/functions/sequences to the API roles and relies on RLS
-- (and on per-table revokes) for protection. Default privileges belong to the creating role, so set
-- them for whoever runs this bootstrap and for `postgres` (the role migrations run as).
do $$
declare
  creator text;
begin
  for creator in
    select distinct rolname from pg_roles where rolname in (current_user, 'postgres')
  loop
    execute format('alter default privileges for role %I in schema public '
                   'grant all on tables to anon, authenticated, service_role', creator);
    execute format('alter default privileges for role %I in schema public '
                   'grant all on sequences to anon, authenticated, service_role', creator);
    execute format('alter default privileges for role %I in schema public '
                   'grant all on functions to anon, authenticated, service_role', creator);
  end loop;
end
$$;

-- ---------------------------------------------------------------- auth (GoTrue)
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;
grant all on schema auth to supabase_auth_admin;

-- GoTrue's auth.users after all its migrations (supabase/auth migrations/*.up.sql). GoTrue itself
-- writes '' (not NULL) into the token columns; the '' defaults let tests insert minimal rows.
create table if not exists auth.users (
  instance_id                 uuid,
  id                          uuid not null primary key,
  aud                         varchar(255),
  role                        varchar(255),
  email                       varchar(255),
  encrypted_password          varchar(255),
  email_confirmed_at          timestamptz,
  invited_at                  timestamptz,
  confirmation_token          varchar(255) default '',
  confirmation_sent_at        timestamptz,
  recovery_token              varchar(255) default '',
  recovery_sent_at            timestamptz,
  email_change_token_new      varchar(255) default '',
  email_change                varchar(255) default '',
  email_change_sent_at        timestamptz,
  last_sign_in_at             timestamptz,
  raw_app_meta_data           jsonb,
  raw_user_meta_data          jsonb,
  is_super_admin              boolean,
  created_at                  timestamptz,
  updated_at                  timestamptz,
  phone                       text unique default null,
  phone_confirmed_at          timestamptz,
  phone_change                text default '',
  phone_change_token          varchar(255) default '',
  phone_change_sent_at        timestamptz,
  confirmed_at                timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
  email_change_token_current  varchar(255) default '',
  email_change_confirm_status smallint default 0
                              check (email_change_confirm_status >= 0 and email_change_confirm_status <= 2),
  banned_until                timestamptz,
  reauthentication_token      varchar(255) default '',
  reauthentication_sent_at    timestamptz,
  is_sso_user                 boolean not null default false,
  deleted_at                  timestamptz,
  is_anonymous                boolean not null default false
);
create unique index if not exists users_email_partial_key on auth.users (email) where (is_sso_user = false);
create index if not exists users_instance_id_idx on auth.users (instance_id);
create index if not exists users_is_anonymous_idx on auth.users (is_anonymous);
comment on table auth.users is 'Auth: Stores user login data within a secure schema. (local stand-in)';

-- GoTrue owns its tables; `postgres` may read and change them (the dashboard and triggers need it).
alter table auth.users owner to supabase_auth_admin;
alter table auth.users enable row level security;
grant all on auth.users to postgres;

-- auth.uid()/role()/jwt() exactly as GoTrue defines them: the per-claim GUCs of PostgREST < 9
-- (`request.jwt.claim.sub`) win, else the JSON `request.jwt.claims` of PostgREST >= 9.
create or replace function auth.uid() returns uuid
language sql stable
as $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.email() returns text
language sql stable
as $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select
    coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

-- ---------------------------------------------------------------- pg_net stand-in
-- Same schema, tables and net.http_post signature as pg_net (supabase/pg_net sql/pg_net.sql and its
-- upgrade scripts; Supabase makes http_post SECURITY DEFINER with search_path = net and grants it to
-- the API roles). Like the real one, a request is only a row in net.http_request_queue until COMMIT:
-- a rolled-back transaction sends nothing. The NOTIFY (also delivered only at COMMIT) wakes
-- devstack/doubles/pgnet_relay.py, which stands in for pg_net's background worker.
--
-- Differences, on purpose:
--   * Real pg_net makes ONE attempt and deletes the queue row; failures only land in
--     net._http_response (kept ~6 h). This stand-in keeps the row and the relay retries 5xx and
--     connection errors with backoff: a local convenience only. Production must not rely on
--     retries: the service's reconciler (pending/failed profiles) is what makes a lost webhook
--     harmless.
--   * net._http_response holds one row per request (the latest attempt), keyed by id.
create schema if not exists net;
grant usage on schema net to supabase_functions_admin, postgres, anon, authenticated, service_role;

do $$
begin
  if to_regtype('net.http_method') is null then
    create domain net.http_method as text
      check (value ilike 'get' or value ilike 'post' or value ilike 'delete');
  end if;
exception when duplicate_object then
  null;
end
$$;

create table if not exists net.http_request_queue (
  id                   bigserial primary key,
  method               net.http_method not null,
  url                  text not null,
  headers              jsonb not null,
  body                 bytea,
  timeout_milliseconds integer not null,
  -- stand-in only: durable delivery state for the relay
  created_at           timestamptz not null default now(),
  attempts             integer not null default 0,
  next_attempt_at      timestamptz not null default now(),
  delivered_at         timestamptz,
  last_status          integer,
  last_error           text
);
-- The relay's claim query: undelivered rows that are due.
create index if not exists http_request_queue_due_idx
  on net.http_request_queue (next_attempt_at) where delivered_at is null;

create table if not exists net._http_response (
  id           bigint primary key,
  status_code  integer,
  content_type text,
  headers      jsonb,
  content      text,
  timed_out    boolean,
  error_msg    text,
  created      timestamptz not null default now()
);
create index if not exists _http_response_created_idx on net._http_response (created);

-- pg_net implements these two in C; plain SQL is enough here.
create or replace function net._urlencode_string(string varchar) returns text
language sql immutable strict
set search_path = ''
as $$
  select coalesce(string_agg(
           case when get_byte(b, i) between 48 and 57     -- 0-9
                  or get_byte(b, i) between 65 and 90     -- A-Z
                  or get_byte(b, i) between 97 and 122    -- a-z
                  or get_byte(b, i) in (45, 46, 95, 126)  -- - . _ ~
                then chr(get_byte(b, i))
                else '%' || upper(lpad(to_hex(get_byte(b, i)), 2, '0'))
           end, '' order by i), '')
  from (select convert_to(string, 'UTF8') as b) as s,
       generate_series(0, length(s.b) - 1) as i
$$;

create or replace function net._encode_url_with_params_array(url text, params_array text[]) returns text
language sql immutable strict
set search_path = ''
as $$
  select case
    when cardinality(params_array) = 0 then url
    else url || case when strpos(url, '?') > 0 then '&' else '?' end || array_to_string(params_array, '&')
  end
$$;

create or replace function net.http_post(
    -- url for the request
    url text,
    -- body of the POST request
    body jsonb default '{}'::jsonb,
    -- key/value pairs to be url encoded and appended to the `url`
    params jsonb default '{}'::jsonb,
    -- key/values to be included in request headers
    headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
    -- the maximum number of milliseconds the request may take before being cancelled
    timeout_milliseconds int default 5000
)
    -- request_id reference
    returns bigint
    volatile
    parallel safe
    language plpgsql
    security definer
    set search_path = net
as $$
declare
    request_id bigint;
    params_array text[];
    content_type text;
begin
    -- Same validation as pg_net: JSON content type (added when omitted), non-null body.
    select header_value into content_type
    from jsonb_each_text(coalesce(headers, '{}'::jsonb)) r(header_name, header_value)
    where lower(header_name) = 'content-type'
    limit 1;

    if content_type is null then
        headers := coalesce(headers, '{}'::jsonb) || '{"Content-Type": "application/json"}'::jsonb;
    end if;

    if content_type <> 'application/json' then
        raise exception 'Content-Type header must be "application/json"';
    end if;

    if body is null then
        raise exception 'body must not be null';
    end if;

    select coalesce(array_agg(net._urlencode_string(key) || '=' || net._urlencode_string(value)), '{}')
    into params_array
    from jsonb_each_text(params);

    insert into net.http_request_queue (method, url, headers, body, timeout_milliseconds)
    values (
        'POST',
        net._encode_url_with_params_array(url, params_array),
        headers,
        convert_to(body::text, 'UTF8'),
        timeout_milliseconds
    )
    returning id into request_id;

    -- Stand-in for pg_net's net.wake(): NOTIFY is delivered at COMMIT, never on ROLLBACK.
    perform pg_notify('net_http_request', request_id::text);

    return request_id;
end
$$;

revoke all on function net.http_post(text, jsonb, jsonb, jsonb, integer) from public;
grant execute on function net.http_post(text, jsonb, jsonb, jsonb, integer)
  to supabase_functions_admin, postgres, anon, authenticated, service_role;

-- ---------------------------------------------------------------- Supabase CLI migration history
-- The table `supabase migration up` / `db push` maintain (version = the file's timestamp prefix).
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version    text not null primary key,
  statements text[],
  name       text
);
