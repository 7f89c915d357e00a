-- The LLM proxy's calls (public.llm_calls): owners read their own under RLS, only the service writes, and the
-- charge records that name a call stay private.
begin;
select plan(17);

set local client_min_messages = warning;

select has_table('public', 'llm_calls', 'public.llm_calls exists');
select has_column('private', 'llm_charges', 'llm_call_id', 'a charge record can name the proxy call it belongs to');
select policies_are('public', 'llm_calls', array['llm_calls_select_own'], 'llm_calls: one policy');
select policy_cmd_is('public', 'llm_calls', 'llm_calls_select_own', 'select', 'llm_calls policy is SELECT');
select policy_roles_are('public', 'llm_calls', 'llm_calls_select_own', array['authenticated'],
  'llm_calls policy applies to authenticated');
select table_privs_are('public', 'llm_calls', 'authenticated', array['SELECT'], 'authenticated: SELECT only on llm_calls');
select table_privs_are('public', 'llm_calls', 'anon', array[]::text[], 'anon: nothing on llm_calls');
select ok((select relrowsecurity and relforcerowsecurity from pg_class where oid = 'public.llm_calls'::regclass),
  'RLS is enabled and forced on llm_calls');

-- ------------------------------------------------------------------ fixtures (as the service: postgres)
insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values
  ('d4d4d4d4-0000-4000-8000-00000000000d', 'authenticated', 'authenticated', 'llm-d@example.test',
   '{"provider":"email","providers":["email"]}', '{}', now(), now()),
  ('e5e5e5e5-0000-4000-8000-00000000000e', 'authenticated', 'authenticated', 'llm-e@example.test',
   '{"provider":"email","providers":["email"]}', '{}', now(), now());
insert into public.llm_calls (id, user_id, model, stream, status, request_id, total_tokens, cost)
values
  ('d4d4d4d4-3333-4000-8000-000000000001', 'd4d4d4d4-0000-4000-8000-00000000000d', 'gpt-4o-mini', false,
   'complete', 'chatcmpl-d', 36, 0.0000123),
  ('e5e5e5e5-3333-4000-8000-000000000001', 'e5e5e5e5-0000-4000-8000-00000000000e', 'gpt-4o-mini', true,
   'complete', 'chatcmpl-e', 12, 0.0000045);
insert into private.llm_charges (request_id, user_id, llm_call_id, spend, charged_at)
values ('chatcmpl-d', 'd4d4d4d4-0000-4000-8000-00000000000d', 'd4d4d4d4-3333-4000-8000-000000000001', 0.0000123,
        now());

select throws_ok(
  $$ insert into public.llm_calls (user_id, model, stream, status)
     values ('d4d4d4d4-0000-4000-8000-00000000000d', 'gpt-4o-mini', false, 'lost') $$,
  '23514', null, 'a call''s status is pending, complete or failed'
);

-- ------------------------------------------------------------------ user D
set local role authenticated;
set local request.jwt.claims = '{"sub":"d4d4d4d4-0000-4000-8000-00000000000d","role":"authenticated"}';

select results_eq(
  $$ select request_id, total_tokens from public.llm_calls $$,
  $$ values ('chatcmpl-d'::text, 36) $$,
  'D reads only their own calls'
);
select is_empty(
  $$ select 1 from public.llm_calls where user_id = 'e5e5e5e5-0000-4000-8000-00000000000e' $$,
  'filtering on E''s id returns nothing to D'
);
select throws_ok(
  $$ insert into public.llm_calls (user_id, model, stream) values ('d4d4d4d4-0000-4000-8000-00000000000d', 'x', false) $$,
  '42501', null, 'D cannot record a call'
);
select throws_ok(
  $$ update public.llm_calls set cost = 0 $$, '42501', null, 'D cannot change a call''s cost'
);
select throws_ok($$ delete from public.llm_calls $$, '42501', null, 'D cannot delete calls');
select throws_ok($$ select * from private.llm_charges $$, '42501', null, 'D cannot read charge records');

-- ------------------------------------------------------------------ anon
reset role;
set local role anon;
select throws_ok($$ select * from public.llm_calls $$, '42501', null, 'anon cannot read calls');

-- ------------------------------------------------------------------ deleting a user removes their calls
reset role;
delete from auth.users where id = 'd4d4d4d4-0000-4000-8000-00000000000d';
select is_empty(
  $$ select 1 from public.llm_calls where user_id = 'd4d4d4d4-0000-4000-8000-00000000000d' $$,
  'a deleted user''s calls are gone'
);

select * from finish();
rollback;
