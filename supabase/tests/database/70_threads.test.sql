-- Threads (public.threads): owners read their own under RLS (not the agent's input, branch_context), only the
-- service writes; every user has one default thread; messages belong to a thread.
begin;
select plan(19);

set local client_min_messages = warning;

select has_table('public', 'threads', 'public.threads exists');
select col_not_null('public', 'messages', 'thread_id', 'every message belongs to a thread');
select policies_are('public', 'threads', array['threads_select_own'], 'threads: one policy');
select policy_cmd_is('public', 'threads', 'threads_select_own', 'select', 'threads policy is SELECT');
select policy_roles_are('public', 'threads', 'threads_select_own', array['authenticated'],
  'threads policy applies to authenticated');
select table_privs_are('public', 'threads', 'anon', array[]::text[], 'anon: nothing on threads');
select ok((select relrowsecurity and relforcerowsecurity from pg_class where oid = 'public.threads'::regclass),
  'RLS is enabled and forced on threads');
select has_index('public', 'threads', 'threads_user_id_last_message_at_idx', 'the thread list has its index');
select has_index('public', 'messages', 'messages_thread_id_created_at_idx', 'a thread''s history has its index');

-- ------------------------------------------------------------------ fixtures (as the service: postgres)
insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values
  ('d4d4d4d4-0000-4000-8000-00000000000d', 'authenticated', 'authenticated', 'threads-d@example.test',
   '{"provider":"email","providers":["email"]}', '{}', now(), now()),
  ('e5e5e5e5-0000-4000-8000-00000000000e', 'authenticated', 'authenticated', 'threads-e@example.test',
   '{"provider":"email","providers":["email"]}', '{}', now(), now());
insert into public.threads (id, user_id, title, title_source, letta_conversation_id, branch_context)
values
  ('d4d4d4d4-4444-4000-8000-000000000001', 'd4d4d4d4-0000-4000-8000-00000000000d', 'Trips', 'user', 'conv-d',
   'User: earlier'),
  ('e5e5e5e5-4444-4000-8000-000000000001', 'e5e5e5e5-0000-4000-8000-00000000000e', 'Secrets', 'user', 'conv-e', null);

select is((select count(*)::int from public.threads where is_default), 2, 'each new user got a default thread');
select throws_ok(
  $$ insert into public.threads (user_id, is_default) values ('d4d4d4d4-0000-4000-8000-00000000000d', true) $$,
  '23505', null, 'one default thread per user'
);
select throws_ok(
  $$ insert into public.threads (user_id, is_default, letta_conversation_id)
     values ('d4d4d4d4-0000-4000-8000-00000000000d', true, 'conv-y') $$,
  '23514', null, 'the default thread is the agent''s own history: no conversation id'
);

-- ------------------------------------------------------------------ user D
set local role authenticated;
set local request.jwt.claims = '{"sub":"d4d4d4d4-0000-4000-8000-00000000000d","role":"authenticated"}';

select results_eq(
  $$ select title from public.threads where not is_default $$,
  $$ values ('Trips'::text) $$,
  'D reads only their own threads'
);
select is_empty(
  $$ select 1 from public.threads where user_id = 'e5e5e5e5-0000-4000-8000-00000000000e' $$,
  'filtering on E''s id returns nothing to D'
);
select throws_ok($$ select branch_context from public.threads $$, '42501', null,
  'the transcript given to the agent is not the frontend''s to read');
select throws_ok($$ select letta_conversation_id from public.threads $$, '42501', null,
  'Letta''s ids stay inside');
select throws_ok(
  $$ insert into public.threads (user_id) values ('d4d4d4d4-0000-4000-8000-00000000000d') $$,
  '42501', null, 'D cannot create a thread directly'
);
select throws_ok($$ update public.threads set title = 'x' $$, '42501', null, 'D cannot rename directly');

-- ------------------------------------------------------------------ anon
reset role;
set local role anon;
select throws_ok($$ select id from public.threads $$, '42501', null, 'anon cannot read threads');

select * from finish();
rollback;
