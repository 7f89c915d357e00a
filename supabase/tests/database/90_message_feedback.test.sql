-- Feedback on replies (public.message_feedback): one row per message, owners read their own under RLS, only the
-- service writes; the rating and the comment are bounded; it goes with its message and with its user.
begin;
select plan(26);

set local client_min_messages = warning;

select has_table('public', 'message_feedback', 'public.message_feedback exists');
select col_is_pk('public', 'message_feedback', 'message_id', 'one feedback per message');
select fk_ok('public', 'message_feedback', 'message_id', 'public', 'messages', 'id', 'feedback belongs to a message');
select policies_are('public', 'message_feedback', array['message_feedback_select_own'], 'message_feedback: one policy');
select policy_cmd_is('public', 'message_feedback', 'message_feedback_select_own', 'select',
  'message_feedback policy is SELECT');
select policy_roles_are('public', 'message_feedback', 'message_feedback_select_own', array['authenticated'],
  'message_feedback policy applies to authenticated');
select table_privs_are('public', 'message_feedback', 'authenticated', array['SELECT'],
  'authenticated: SELECT only on message_feedback');
select table_privs_are('public', 'message_feedback', 'anon', array[]::text[], 'anon: nothing on message_feedback');
select ok((select relrowsecurity and relforcerowsecurity from pg_class where oid = 'public.message_feedback'::regclass),
  'RLS is enabled and forced on message_feedback');

-- ------------------------------------------------------------------ fixtures (as the service: postgres)
insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values
  ('d4d4d4d4-0000-4000-8000-00000000000d', 'authenticated', 'authenticated', 'feedback-d@example.test',
   '{"provider":"email","providers":["email"]}', '{}', now(), now()),
  ('e5e5e5e5-0000-4000-8000-00000000000e', 'authenticated', 'authenticated', 'feedback-e@example.test',
   '{"provider":"email","providers":["email"]}', '{}', now(), now());
insert into public.messages (id, user_id, turn_id, role, content)
values
  ('d4d4d4d4-5555-4000-8000-000000000001', 'd4d4d4d4-0000-4000-8000-00000000000d',
   'd4d4d4d4-6666-4000-8000-000000000001', 'assistant', 'A reply to D'),
  ('d4d4d4d4-5555-4000-8000-000000000002', 'd4d4d4d4-0000-4000-8000-00000000000d',
   'd4d4d4d4-6666-4000-8000-000000000002', 'assistant', 'Another reply to D'),
  ('e5e5e5e5-5555-4000-8000-000000000001', 'e5e5e5e5-0000-4000-8000-00000000000e',
   'e5e5e5e5-6666-4000-8000-000000000001', 'assistant', 'A reply to E');
insert into public.message_feedback (message_id, user_id, rating, comment)
values
  ('d4d4d4d4-5555-4000-8000-000000000001', 'd4d4d4d4-0000-4000-8000-00000000000d', 'down', 'too vague'),
  ('d4d4d4d4-5555-4000-8000-000000000002', 'd4d4d4d4-0000-4000-8000-00000000000d', 'up', null),
  ('e5e5e5e5-5555-4000-8000-000000000001', 'e5e5e5e5-0000-4000-8000-00000000000e', 'up', 'E''s secret remark');

select throws_ok(
  $$ insert into public.message_feedback (message_id, user_id, rating)
     values ('d4d4d4d4-5555-4000-8000-000000000001', 'd4d4d4d4-0000-4000-8000-00000000000d', 'up') $$,
  '23505', null, 'a message has at most one feedback'
);
select throws_ok(
  $$ update public.message_feedback set rating = 'meh' where message_id = 'd4d4d4d4-5555-4000-8000-000000000002' $$,
  '23514', null, 'the rating is up or down'
);
select throws_ok(
  $$ update public.message_feedback set comment = repeat('x', 2001)
     where message_id = 'd4d4d4d4-5555-4000-8000-000000000002' $$,
  '23514', null, 'a comment is at most 2000 characters'
);
select throws_ok(
  $$ update public.message_feedback set comment = '' where message_id = 'd4d4d4d4-5555-4000-8000-000000000002' $$,
  '23514', null, 'an empty comment is no comment (null)'
);
select is(
  (select array[letta_attempts::text, (letta_retry_at <= now())::text] from public.message_feedback
   where message_id = 'd4d4d4d4-5555-4000-8000-000000000001'),
  array['0', 'true'],
  'a new feedback has had no delivery attempt and is due for one'
);
select throws_ok(
  $$ update public.message_feedback set letta_attempts = -1
     where message_id = 'd4d4d4d4-5555-4000-8000-000000000002' $$,
  '23514', null, 'delivery attempts are never negative'
);
select ok(
  (select pg_get_indexdef(indexrelid) like '%(letta_retry_at) WHERE (letta_sent_at IS NULL)'
   from pg_index where indexrelid = 'public.message_feedback_retry_idx'::regclass),
  'unsent feedback is indexed by its next retry, and only unsent feedback'
);

-- updated_at moves when the user changes the feedback, not when the service records the send to Letta.
update public.message_feedback set updated_at = '2026-01-01T00:00:00Z'
  where message_id = 'd4d4d4d4-5555-4000-8000-000000000002';
update public.message_feedback set letta_sent_at = now(), letta_step_id = 'step-x'
  where message_id = 'd4d4d4d4-5555-4000-8000-000000000002';
select is((select updated_at from public.message_feedback where message_id = 'd4d4d4d4-5555-4000-8000-000000000002'),
  '2026-01-01T00:00:00Z'::timestamptz, 'recording the send to Letta keeps updated_at');
update public.message_feedback set rating = 'down' where message_id = 'd4d4d4d4-5555-4000-8000-000000000002';
select cmp_ok((select updated_at from public.message_feedback where message_id = 'd4d4d4d4-5555-4000-8000-000000000002'),
  '>', '2026-01-01T00:00:00Z'::timestamptz, 'a change of rating moves updated_at');

-- ------------------------------------------------------------------ user D
set local role authenticated;
set local request.jwt.claims = '{"sub":"d4d4d4d4-0000-4000-8000-00000000000d","role":"authenticated"}';

select results_eq(
  $$ select rating, comment from public.message_feedback order by message_id $$,
  $$ values ('down'::text, 'too vague'::text), ('down', null) $$,
  'D reads only their own feedback'
);
select is_empty(
  $$ select 1 from public.message_feedback where user_id = 'e5e5e5e5-0000-4000-8000-00000000000e' $$,
  'filtering on E''s id returns nothing to D'
);
select throws_ok(
  $$ insert into public.message_feedback (message_id, user_id, rating)
     values ('e5e5e5e5-5555-4000-8000-000000000001', 'd4d4d4d4-0000-4000-8000-00000000000d', 'down') $$,
  '42501', null, 'D cannot write feedback (only the service does)'
);
select throws_ok($$ update public.message_feedback set rating = 'up' $$, '42501', null, 'D cannot change feedback');
select throws_ok($$ delete from public.message_feedback $$, '42501', null, 'D cannot delete feedback');

-- ------------------------------------------------------------------ anon
reset role;
set local role anon;
select throws_ok($$ select * from public.message_feedback $$, '42501', null, 'anon cannot read feedback');

-- ------------------------------------------------------------------ it goes with its message and its user
reset role;
delete from public.messages where id = 'd4d4d4d4-5555-4000-8000-000000000001';
select is((select count(*)::int from public.message_feedback where user_id = 'd4d4d4d4-0000-4000-8000-00000000000d'),
  1, 'a deleted message''s feedback is gone');
delete from auth.users where id = 'd4d4d4d4-0000-4000-8000-00000000000d';
select is_empty(
  $$ select 1 from public.message_feedback where user_id = 'd4d4d4d4-0000-4000-8000-00000000000d' $$,
  'a deleted user''s feedback is gone'
);

select * from finish();
rollback;
