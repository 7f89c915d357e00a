-- The signup trigger: a GoTrue-shaped signup creates a pending profile and queues one trimmed,
-- authenticated webhook through pg_net; no configuration, no pg_net, or a failing pg_net never
-- blocks the signup.
begin;
select plan(23);

-- The trigger's guarded failures raise WARNINGs; keep the TAP output clean.
set local client_min_messages = error;

-- A known webhook configuration (rolled back at the end).
delete from private.webhook_config;
insert into private.webhook_config (url, secret) values ('http://webhook.pgtap.test/signup', 'pgtap-secret');

-- ------------------------------------------------------------------ a GoTrue signup
-- GoTrue (role supabase_auth_admin) inserts with role = '' and empty-string tokens, then sets the
-- role in an UPDATE of the same transaction.
set local role supabase_auth_admin;
insert into auth.users (
  instance_id, id, aud, role, email, encrypted_password, email_confirmed_at, invited_at,
  confirmation_token, confirmation_sent_at, recovery_token, recovery_sent_at,
  email_change_token_new, email_change, email_change_sent_at, email_change_token_current,
  email_change_confirm_status, last_sign_in_at, raw_app_meta_data, raw_user_meta_data,
  is_super_admin, created_at, updated_at, phone, phone_confirmed_at, phone_change,
  phone_change_token, phone_change_sent_at, banned_until, reauthentication_token,
  reauthentication_sent_at, is_sso_user, deleted_at, is_anonymous
) values (
  '00000000-0000-0000-0000-000000000000', 'c0c0c0c0-0000-4000-8000-000000000001', 'authenticated', '',
  'ada@example.test', '$2a$10$abcdefghijklmnopqrstuuC6Jd0eNqk9Jx3Z0Jb7n8HnP0lEb6XvO', null, null,
  'pkce_0123456789abcdef', now(), '', null,
  '', '', null, '',
  0, null, '{"provider":"email","providers":["email"]}',
  '{"full_name":"Ada Lovelace","avatar_url":"https://example.test/a.png","internal_note":"do not forward"}',
  null, now(), now(), null, null, '',
  '', null, null, '',
  null, false, null, false
);
update auth.users set role = 'authenticated' where id = 'c0c0c0c0-0000-4000-8000-000000000001';
reset role;

select results_eq(
  $$ select agent_status, display_name, email, provisioning_attempts
     from public.user_profiles where id = 'c0c0c0c0-0000-4000-8000-000000000001' $$,
  $$ values ('pending'::text, 'Ada Lovelace'::text, 'ada@example.test'::text, 0) $$,
  'signup creates a pending profile with display_name from metadata'
);
select is(
  (select role::text from auth.users where id = 'c0c0c0c0-0000-4000-8000-000000000001'),
  'authenticated',
  'the signup transaction completes (role set after the insert)'
);
select is(
  (select count(*)::int from net.http_request_queue
   where convert_from(body, 'UTF8')::jsonb -> 'record' ->> 'id' = 'c0c0c0c0-0000-4000-8000-000000000001'),
  1,
  'exactly one webhook is queued for the new user'
);
select results_eq(
  $$ select method::text, url from net.http_request_queue
     where convert_from(body, 'UTF8')::jsonb -> 'record' ->> 'id' = 'c0c0c0c0-0000-4000-8000-000000000001' $$,
  $$ values ('POST'::text, 'http://webhook.pgtap.test/signup'::text) $$,
  'the webhook is a POST to the configured URL'
);
select is(
  (select headers from net.http_request_queue
   where convert_from(body, 'UTF8')::jsonb -> 'record' ->> 'id' = 'c0c0c0c0-0000-4000-8000-000000000001'),
  '{"Content-Type": "application/json", "x-webhook-secret": "pgtap-secret"}'::jsonb,
  'the webhook carries the shared secret header'
);
select is(
  (select convert_from(body, 'UTF8')::jsonb from net.http_request_queue
   where convert_from(body, 'UTF8')::jsonb -> 'record' ->> 'id' = 'c0c0c0c0-0000-4000-8000-000000000001'),
  jsonb_build_object(
    'type', 'INSERT',
    'table', 'users',
    'schema', 'auth',
    'record', jsonb_build_object(
      'id', 'c0c0c0c0-0000-4000-8000-000000000001',
      'email', 'ada@example.test',
      'created_at', (select created_at from auth.users where id = 'c0c0c0c0-0000-4000-8000-000000000001'),
      'raw_user_meta_data', '{"full_name": "Ada Lovelace"}'::jsonb),
    'old_record', null),
  'the payload is the trimmed Database Webhook shape'
);
select ok(
  (select convert_from(body, 'UTF8') !~* '(encrypted_password|token|\$2a\$|pkce_|internal_note|app_meta)'
   from net.http_request_queue
   where convert_from(body, 'UTF8')::jsonb -> 'record' ->> 'id' = 'c0c0c0c0-0000-4000-8000-000000000001'),
  'the payload carries no password hash, tokens, app metadata or other metadata'
);

-- display_name falls back full_name -> name -> display_name; blank values are ignored.
insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values
  ('c0c0c0c0-0000-4000-8000-000000000002', 'authenticated', '', 'grace@example.test',
   '{"provider":"email","providers":["email"]}', '{"name":"Grace Hopper"}', now(), now()),
  ('c0c0c0c0-0000-4000-8000-000000000003', 'authenticated', '', 'linus@example.test',
   '{"provider":"email","providers":["email"]}', '{"full_name":"  ","display_name":"Linus"}', now(), now()),
  ('c0c0c0c0-0000-4000-8000-000000000004', 'authenticated', '', 'nobody@example.test',
   '{"provider":"email","providers":["email"]}', '{}', now(), now()),
  ('c0c0c0c0-0000-4000-8000-000000000005', 'authenticated', '', null,
   '{}', null, now(), now());
select results_eq(
  $$ select id::text, display_name, agent_status from public.user_profiles
     where id in ('c0c0c0c0-0000-4000-8000-000000000002', 'c0c0c0c0-0000-4000-8000-000000000003',
                  'c0c0c0c0-0000-4000-8000-000000000004', 'c0c0c0c0-0000-4000-8000-000000000005')
     order by id $$,
  $$ values ('c0c0c0c0-0000-4000-8000-000000000002', 'Grace Hopper'::text, 'pending'::text),
            ('c0c0c0c0-0000-4000-8000-000000000003', 'Linus', 'pending'),
            ('c0c0c0c0-0000-4000-8000-000000000004', null, 'pending'),
            ('c0c0c0c0-0000-4000-8000-000000000005', null, 'pending') $$,
  'display_name from name / display_name / none; null metadata and email still work'
);
select is(
  (select convert_from(body, 'UTF8')::jsonb -> 'record' -> 'raw_user_meta_data' from net.http_request_queue
   where convert_from(body, 'UTF8')::jsonb -> 'record' ->> 'id' = 'c0c0c0c0-0000-4000-8000-000000000003'),
  '{"full_name": "  ", "display_name": "Linus"}'::jsonb,
  'only the display-name fields of the metadata are forwarded'
);

-- Signups stay one transaction with GoTrue's: a rolled-back signup queues nothing.
savepoint before_rolled_back_signup;
insert into auth.users (id, aud, role, email, created_at, updated_at)
values ('c0c0c0c0-0000-4000-8000-000000000006', 'authenticated', '', 'gone@example.test', now(), now());
rollback to savepoint before_rolled_back_signup;
select is_empty(
  $$ select 1 from net.http_request_queue
     where convert_from(body, 'UTF8')::jsonb -> 'record' ->> 'id' = 'c0c0c0c0-0000-4000-8000-000000000006' $$,
  'a rolled-back signup leaves no webhook behind'
);

-- ------------------------------------------------------------------ no webhook configuration
delete from private.webhook_config;
select lives_ok(
  $$ insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
     values ('c0c0c0c0-0000-4000-8000-000000000011', 'authenticated', '', 'noconfig@example.test',
             '{"provider":"email","providers":["email"]}', '{"full_name":"No Config"}', now(), now()) $$,
  'signup succeeds without webhook configuration'
);
select results_eq(
  $$ select agent_status from public.user_profiles where id = 'c0c0c0c0-0000-4000-8000-000000000011' $$,
  $$ values ('pending'::text) $$,
  'the profile is still created (the reconciler will provision it)'
);
select is_empty(
  $$ select 1 from net.http_request_queue
     where convert_from(body, 'UTF8')::jsonb -> 'record' ->> 'id' = 'c0c0c0c0-0000-4000-8000-000000000011' $$,
  'nothing is queued without configuration'
);

-- ------------------------------------------------------------------ pg_net raises
insert into private.webhook_config (url, secret) values ('http://webhook.pgtap.test/signup', 'pgtap-secret');
create or replace function net.http_post(
  url text,
  body jsonb default '{}'::jsonb,
  params jsonb default '{}'::jsonb,
  headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
  timeout_milliseconds integer default 5000
) returns bigint
language plpgsql
as $$
begin
  raise exception 'pg_net is broken';
end;
$$;
select throws_ok(
  $$ select net.http_post('http://webhook.pgtap.test/x') $$,
  'P0001', 'pg_net is broken', 'the replaced net.http_post raises'
);
select lives_ok(
  $$ insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
     values ('c0c0c0c0-0000-4000-8000-000000000021', 'authenticated', '', 'broken@example.test',
             '{"provider":"email","providers":["email"]}', '{"full_name":"Broken Net"}', now(), now()) $$,
  'signup succeeds when net.http_post raises'
);
select results_eq(
  $$ select agent_status, display_name from public.user_profiles where id = 'c0c0c0c0-0000-4000-8000-000000000021' $$,
  $$ values ('pending'::text, 'Broken Net'::text) $$,
  'the profile is created when net.http_post raises'
);
select is_empty(
  $$ select 1 from net.http_request_queue
     where convert_from(body, 'UTF8')::jsonb -> 'record' ->> 'id' = 'c0c0c0c0-0000-4000-8000-000000000021' $$,
  'nothing is queued when net.http_post raises'
);

-- ------------------------------------------------------------------ pg_net not installed
drop function net.http_post(text, jsonb, jsonb, jsonb, integer);
select ok(
  to_regprocedure('net.http_post(text,jsonb,jsonb,jsonb,integer)') is null,
  'net.http_post is gone (pg_net not enabled)'
);
select lives_ok(
  $$ insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
     values ('c0c0c0c0-0000-4000-8000-000000000031', 'authenticated', '', 'nonet@example.test',
             '{"provider":"email","providers":["email"]}', '{"name":"No Net"}', now(), now()) $$,
  'signup succeeds without pg_net'
);
select results_eq(
  $$ select agent_status, display_name from public.user_profiles where id = 'c0c0c0c0-0000-4000-8000-000000000031' $$,
  $$ values ('pending'::text, 'No Net'::text) $$,
  'the profile is created without pg_net'
);

select is_empty(
  $$ select 1 from net.http_request_queue
     where convert_from(body, 'UTF8')::jsonb -> 'record' ->> 'id' = 'c0c0c0c0-0000-4000-8000-000000000031' $$,
  'nothing is queued without pg_net'
);

-- ------------------------------------------------------------------ later writes by GoTrue
select is(
  (select count(*)::int from public.user_profiles where id::text like 'c0c0c0c0-0000-4000-8000-0000000000__'),
  8,
  'one profile per signed-up user'
);

-- GoTrue's later UPDATEs (confirmation, sign-in) do not touch the profile.
update auth.users set email_confirmed_at = now(), last_sign_in_at = now()
where id = 'c0c0c0c0-0000-4000-8000-000000000001';
select is(
  (select count(*)::int from public.user_profiles where id = 'c0c0c0c0-0000-4000-8000-000000000001'),
  1,
  'updates of auth.users leave the profile alone'
);

select * from finish();
rollback;
