-- Memory versions (20261130000900_memory_version): the agent's memory version on the profile, the version each
-- thread's conversation was compiled at on the thread. Only the service writes either; the owner reads the first
-- with their profile, the second stays inside like the Letta ids.
begin;
select plan(9);

set local client_min_messages = warning;

select col_not_null('public', 'user_profiles', 'memory_version', 'every profile has a memory version');
select col_default_is('public', 'user_profiles', 'memory_version', '0', 'memory versions start at 0');
select col_is_null('public', 'threads', 'compiled_memory_version', 'a thread''s compiled version may be unknown');
select col_hasnt_default('public', 'threads', 'compiled_memory_version', 'unknown until its conversation is compiled');

-- ------------------------------------------------------------------ fixtures (as the service: postgres)
insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values ('f6f6f6f6-0000-4000-8000-00000000000f', 'authenticated', 'authenticated', 'memory-f@example.test',
        '{"provider":"email","providers":["email"]}', '{}', now(), now());
insert into public.threads (user_id, letta_conversation_id, compiled_memory_version)
values ('f6f6f6f6-0000-4000-8000-00000000000f', 'conv-f', 0);

select is((select memory_version from public.user_profiles where id = 'f6f6f6f6-0000-4000-8000-00000000000f'),
  0::bigint, 'a new user''s profile starts at 0');

-- ------------------------------------------------------------------ user F
set local role authenticated;
set local request.jwt.claims = '{"sub":"f6f6f6f6-0000-4000-8000-00000000000f","role":"authenticated"}';

select results_eq($$ select memory_version from public.user_profiles $$, $$ values (0::bigint) $$,
  'F reads their own memory version');
select throws_ok($$ update public.user_profiles set memory_version = 7 $$, '42501', null,
  'F cannot move their memory version (a forged one would leave a thread stale)');
select throws_ok($$ select compiled_memory_version from public.threads $$, '42501', null,
  'the version a conversation was compiled at stays inside');
select throws_ok($$ update public.threads set compiled_memory_version = 7 $$, '42501', null,
  'F cannot mark a thread compiled');

select * from finish();
rollback;
