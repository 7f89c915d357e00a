-- What the frontend can do through PostgREST: roles are switched exactly as PostgREST does
-- (set local role + request.jwt.claims), so RLS and grants are exercised as in production.
begin;
select plan(30);

set local client_min_messages = warning;

-- ------------------------------------------------------------------ fixtures (as the service: postgres)
insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values
  ('a1a1a1a1-0000-4000-8000-00000000000a', 'authenticated', 'authenticated', 'rls-a@example.test',
   '{"provider":"email","providers":["email"]}', '{"full_name":"User A"}', now(), now()),
  ('b2b2b2b2-0000-4000-8000-00000000000b', 'authenticated', 'authenticated', 'rls-b@example.test',
   '{"provider":"email","providers":["email"]}', '{"full_name":"User B"}', now(), now());

insert into public.messages (user_id, turn_id, role, content) values
  ('a1a1a1a1-0000-4000-8000-00000000000a', 'a1a1a1a1-1111-4000-8000-000000000001', 'user', 'hello from A'),
  ('a1a1a1a1-0000-4000-8000-00000000000a', 'a1a1a1a1-1111-4000-8000-000000000001', 'assistant', 'hi A'),
  ('b2b2b2b2-0000-4000-8000-00000000000b', 'b2b2b2b2-1111-4000-8000-000000000001', 'user', 'hello from B');

insert into public.usage_metrics (user_id, date, total_messages, total_tokens, total_cost) values
  ('a1a1a1a1-0000-4000-8000-00000000000a', current_date, 2, 100, 0.001),
  ('b2b2b2b2-0000-4000-8000-00000000000b', current_date, 1, 50, 0.0005);

insert into private.litellm_keys (user_id, litellm_key) values
  ('a1a1a1a1-0000-4000-8000-00000000000a', 'sk-rls-test-a'),
  ('b2b2b2b2-0000-4000-8000-00000000000b', 'sk-rls-test-b');

-- ------------------------------------------------------------------ user A
set local role authenticated;
set local request.jwt.claims = '{"sub":"a1a1a1a1-0000-4000-8000-00000000000a","role":"authenticated"}';

select is(auth.uid(), 'a1a1a1a1-0000-4000-8000-00000000000a'::uuid, 'auth.uid() reads request.jwt.claims');
select is(auth.role(), 'authenticated', 'auth.role() reads request.jwt.claims');
select is(auth.jwt() ->> 'sub', 'a1a1a1a1-0000-4000-8000-00000000000a', 'auth.jwt() returns the claims');

select results_eq(
  $$ select id, display_name from public.user_profiles $$,
  $$ values ('a1a1a1a1-0000-4000-8000-00000000000a'::uuid, 'User A'::text) $$,
  'A sees only their own profile'
);
select results_eq(
  $$ select content from public.messages order by created_at $$,
  $$ values ('hello from A'::text), ('hi A'::text) $$,
  'A sees only their own messages'
);
select is_empty(
  $$ select 1 from public.messages where user_id = 'b2b2b2b2-0000-4000-8000-00000000000b' $$,
  'filtering on B''s id returns nothing to A'
);
select results_eq(
  $$ select user_id, total_tokens from public.usage_metrics $$,
  $$ values ('a1a1a1a1-0000-4000-8000-00000000000a'::uuid, 100::bigint) $$,
  'A sees only their own usage'
);

-- Writes: no grants and no policies, so every write is refused.
select throws_ok(
  $$ insert into public.messages (user_id, turn_id, role, content)
     values ('a1a1a1a1-0000-4000-8000-00000000000a', gen_random_uuid(), 'user', 'forged') $$,
  '42501', null, 'A cannot insert messages'
);
select throws_ok(
  $$ update public.messages set content = 'edited' where user_id = 'a1a1a1a1-0000-4000-8000-00000000000a' $$,
  '42501', null, 'A cannot update their messages'
);
select throws_ok(
  $$ delete from public.messages where user_id = 'a1a1a1a1-0000-4000-8000-00000000000a' $$,
  '42501', null, 'A cannot delete their messages'
);
select throws_ok($$ truncate public.messages $$, '42501', null, 'A cannot truncate messages');
select throws_ok(
  $$ insert into public.usage_metrics (user_id, date, total_cost)
     values ('a1a1a1a1-0000-4000-8000-00000000000a', current_date + 1, 0) $$,
  '42501', null, 'A cannot insert usage'
);
select throws_ok(
  $$ update public.usage_metrics set total_cost = 0 $$,
  '42501', null, 'A cannot update usage'
);
select throws_ok($$ delete from public.usage_metrics $$, '42501', null, 'A cannot delete usage');
select throws_ok(
  $$ update public.user_profiles set agent_status = 'active', letta_agent_id = 'agent-forged' $$,
  '42501', null, 'A cannot update their profile'
);
select throws_ok(
  $$ insert into public.user_profiles (id) values ('c3c3c3c3-0000-4000-8000-00000000000c') $$,
  '42501', null, 'A cannot insert profiles'
);
select throws_ok($$ delete from public.user_profiles $$, '42501', null, 'A cannot delete their profile');

-- Secrets live in the private schema: permission denied, not merely filtered.
select throws_ok($$ select litellm_key from private.litellm_keys $$, '42501', null,
  'A cannot read private.litellm_keys');
select throws_ok($$ select secret from private.webhook_config $$, '42501', null,
  'A cannot read private.webhook_config');
select throws_ok($$ select * from private.deprovisioning $$, '42501', null,
  'A cannot read private.deprovisioning');

-- ------------------------------------------------------------------ user B
set local request.jwt.claims = '{"sub":"b2b2b2b2-0000-4000-8000-00000000000b","role":"authenticated"}';
select results_eq(
  $$ select content from public.messages $$,
  $$ values ('hello from B'::text) $$,
  'B sees only their own messages'
);
select results_eq(
  $$ select id from public.user_profiles $$,
  $$ values ('b2b2b2b2-0000-4000-8000-00000000000b'::uuid) $$,
  'B sees only their own profile'
);

-- Older PostgREST (< 9) set one GUC per claim; auth.uid() still honours request.jwt.claim.sub.
set local request.jwt.claims = '';
set local request.jwt.claim.sub = 'a1a1a1a1-0000-4000-8000-00000000000a';
select results_eq(
  $$ select id from public.user_profiles $$,
  $$ values ('a1a1a1a1-0000-4000-8000-00000000000a'::uuid) $$,
  'auth.uid() falls back to request.jwt.claim.sub'
);
set local request.jwt.claim.sub = '';

-- A token without sub sees nothing.
set local request.jwt.claims = '{"role":"authenticated"}';
select is_empty($$ select 1 from public.user_profiles $$, 'no sub: no profiles');
select is_empty($$ select 1 from public.messages $$, 'no sub: no messages');

-- ------------------------------------------------------------------ anon (not signed in)
reset role;
set local role anon;
set local request.jwt.claims = '{"role":"anon"}';
select throws_ok($$ select * from public.user_profiles $$, '42501', null, 'anon cannot read profiles');
select throws_ok($$ select * from public.messages $$, '42501', null, 'anon cannot read messages');
select throws_ok($$ select * from public.usage_metrics $$, '42501', null, 'anon cannot read usage');
select throws_ok($$ select * from private.litellm_keys $$, '42501', null, 'anon cannot read private.litellm_keys');
select throws_ok($$ select * from private.webhook_config $$, '42501', null, 'anon cannot read private.webhook_config');

reset role;
select * from finish();
rollback;
