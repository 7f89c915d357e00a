-- Upstream error text and LiteLLM's charge records are private: the frontend (supabase-js under RLS) reads a
-- failed message's code, never the upstream's words, and no charge record.
begin;
select plan(9);

set local client_min_messages = warning;

select hasnt_column('public', 'messages', 'error', 'messages has no raw error column');
select has_column('public', 'messages', 'error_code', 'messages has an error code');
select has_column('public', 'messages', 'cost_final', 'messages say whether their cost is final');
select hasnt_column('public', 'user_profiles', 'provisioning_error', 'profiles have no raw provisioning error');

insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values ('c3c3c3c3-0000-4000-8000-00000000000c', 'authenticated', 'authenticated', 'private-c@example.test',
        '{"provider":"email","providers":["email"]}', '{}', now(), now());
insert into public.messages (id, user_id, turn_id, role, content, status, error_code)
values ('c3c3c3c3-2222-4000-8000-000000000001', 'c3c3c3c3-0000-4000-8000-00000000000c',
        'c3c3c3c3-1111-4000-8000-000000000001', 'user', 'hello', 'failed', 'agent_unavailable');
insert into private.message_errors (message_id, detail)
values ('c3c3c3c3-2222-4000-8000-000000000001', 'Cannot connect to host 10.0.3.7:8283');
insert into private.provisioning_errors (user_id, detail)
values ('c3c3c3c3-0000-4000-8000-00000000000c', 'litellm: HTTP 500: internal');
insert into private.llm_charges (request_id, user_id, spend, charged_at)
values ('chatcmpl-private-1', 'c3c3c3c3-0000-4000-8000-00000000000c', 0.0001, now());

set local role authenticated;
set local request.jwt.claims = '{"sub":"c3c3c3c3-0000-4000-8000-00000000000c","role":"authenticated"}';

select results_eq(
  $$ select status, error_code from public.messages $$,
  $$ values ('failed'::text, 'agent_unavailable'::text) $$,
  'the owner reads the failed message and its code'
);
select throws_ok($$ select * from private.message_errors $$, '42501', null, 'the owner cannot read the error text');
select throws_ok($$ select * from private.provisioning_errors $$, '42501', null,
  'the owner cannot read the provisioning error');
select throws_ok($$ select * from private.llm_charges $$, '42501', null, 'the owner cannot read charge records');
select lives_ok($$ select * from public.messages $$, 'select * on messages still works for supabase-js');

reset role;
select * from finish();
rollback;
