-- Deleting an auth user: our rows go with it (cascade), the external resources are remembered in
-- private.deprovisioning, and a DELETE webhook is queued; neither pg_net nor configuration is needed
-- for the deletion itself.
begin;
select plan(14);

set local client_min_messages = error;

delete from private.webhook_config;
insert into private.webhook_config (url, secret) values ('http://webhook.pgtap.test/auth', 'pgtap-secret');

-- ------------------------------------------------------------------ a provisioned user with history
insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values ('d0d0d0d0-0000-4000-8000-000000000001', 'authenticated', 'authenticated', 'del@example.test',
        '{"provider":"email","providers":["email"]}', '{"full_name":"To Delete"}', now(), now());

update public.user_profiles
set agent_status = 'active', letta_agent_id = 'agent-pgtap-del', letta_provider_id = 'provider-pgtap-del',
    litellm_user_id = 'd0d0d0d0-0000-4000-8000-000000000001'
where id = 'd0d0d0d0-0000-4000-8000-000000000001';
insert into private.litellm_keys (user_id, litellm_key)
values ('d0d0d0d0-0000-4000-8000-000000000001', 'sk-pgtap-del');
insert into public.messages (user_id, turn_id, role, content) values
  ('d0d0d0d0-0000-4000-8000-000000000001', 'd0d0d0d0-1111-4000-8000-000000000001', 'user', 'hi'),
  ('d0d0d0d0-0000-4000-8000-000000000001', 'd0d0d0d0-1111-4000-8000-000000000001', 'assistant', 'hello');
insert into public.usage_metrics (user_id, total_messages, total_tokens, total_cost)
values ('d0d0d0d0-0000-4000-8000-000000000001', 2, 42, 0.0001);

-- GoTrue's admin deleteUser runs as supabase_auth_admin.
set local role supabase_auth_admin;
delete from auth.users where id = 'd0d0d0d0-0000-4000-8000-000000000001';
reset role;

select is_empty($$ select 1 from auth.users where id = 'd0d0d0d0-0000-4000-8000-000000000001' $$,
  'the auth user is deleted');
select is_empty($$ select 1 from public.user_profiles where id = 'd0d0d0d0-0000-4000-8000-000000000001' $$,
  'the profile is deleted by the cascade');
select is_empty($$ select 1 from public.messages where user_id = 'd0d0d0d0-0000-4000-8000-000000000001' $$,
  'the messages are deleted by the cascade');
select is_empty($$ select 1 from public.usage_metrics where user_id = 'd0d0d0d0-0000-4000-8000-000000000001' $$,
  'the usage rows are deleted by the cascade');
select is_empty($$ select 1 from private.litellm_keys where user_id = 'd0d0d0d0-0000-4000-8000-000000000001' $$,
  'the LiteLLM key row is deleted by the cascade');
select results_eq(
  $$ select letta_agent_id, letta_provider_id, litellm_user_id, attempts, claimed_until
     from private.deprovisioning where user_id = 'd0d0d0d0-0000-4000-8000-000000000001' $$,
  $$ values ('agent-pgtap-del'::text, 'provider-pgtap-del'::text,
             'd0d0d0d0-0000-4000-8000-000000000001'::text, 0, null::timestamptz) $$,
  'the external ids are queued for deprovisioning'
);
select is(
  (select count(*)::int from net.http_request_queue
   where convert_from(body, 'UTF8')::jsonb ->> 'type' = 'DELETE'
     and convert_from(body, 'UTF8')::jsonb -> 'old_record' ->> 'id' = 'd0d0d0d0-0000-4000-8000-000000000001'),
  1,
  'exactly one DELETE webhook is queued'
);
select is(
  (select convert_from(body, 'UTF8')::jsonb - 'old_record' from net.http_request_queue
   where convert_from(body, 'UTF8')::jsonb -> 'old_record' ->> 'id' = 'd0d0d0d0-0000-4000-8000-000000000001'),
  '{"type": "DELETE", "table": "users", "schema": "auth", "record": null}'::jsonb,
  'the DELETE webhook has the Database Webhook shape'
);
select is(
  (select (convert_from(body, 'UTF8')::jsonb -> 'old_record') - 'created_at' from net.http_request_queue
   where convert_from(body, 'UTF8')::jsonb -> 'old_record' ->> 'id' = 'd0d0d0d0-0000-4000-8000-000000000001'),
  '{"id": "d0d0d0d0-0000-4000-8000-000000000001", "email": "del@example.test"}'::jsonb,
  'old_record carries the id and email only (plus created_at)'
);
select is(
  (select headers ->> 'x-webhook-secret' from net.http_request_queue
   where convert_from(body, 'UTF8')::jsonb -> 'old_record' ->> 'id' = 'd0d0d0d0-0000-4000-8000-000000000001'),
  'pgtap-secret',
  'the DELETE webhook carries the shared secret header'
);

-- ------------------------------------------------------------------ a user never provisioned
insert into auth.users (id, aud, role, email, created_at, updated_at)
values ('d0d0d0d0-0000-4000-8000-000000000002', 'authenticated', '', 'pending-del@example.test', now(), now());
delete from auth.users where id = 'd0d0d0d0-0000-4000-8000-000000000002';
select results_eq(
  $$ select letta_agent_id, letta_provider_id, litellm_user_id
     from private.deprovisioning where user_id = 'd0d0d0d0-0000-4000-8000-000000000002' $$,
  $$ values (null::text, null::text, null::text) $$,
  'a pending user is still queued (an in-flight provisioning may have created resources)'
);

-- ------------------------------------------------------------------ no configuration and no pg_net
delete from private.webhook_config;
drop function net.http_post(text, jsonb, jsonb, jsonb, integer);
insert into auth.users (id, aud, role, email, created_at, updated_at)
values ('d0d0d0d0-0000-4000-8000-000000000003', 'authenticated', 'authenticated', 'nonet-del@example.test',
        now(), now());
select lives_ok(
  $$ delete from auth.users where id = 'd0d0d0d0-0000-4000-8000-000000000003' $$,
  'deleting a user works without pg_net or configuration'
);
select isnt_empty(
  $$ select 1 from private.deprovisioning where user_id = 'd0d0d0d0-0000-4000-8000-000000000003' $$,
  'the user is queued for deprovisioning without pg_net'
);
select is_empty(
  $$ select 1 from public.user_profiles where id = 'd0d0d0d0-0000-4000-8000-000000000003' $$,
  'the profile is deleted without pg_net'
);

select * from finish();
rollback;
