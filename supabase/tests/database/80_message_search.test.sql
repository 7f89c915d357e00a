-- Full-text search over one's own messages: public.search_messages as the frontend calls it (role and claims
-- switched as PostgREST does), private.search_messages_for as the service calls it. Isolation (A never finds B's
-- words), who may execute what, ranking, stemming in both languages, snippets, thread filter, keyset paging and
-- the refused queries.
begin;
select plan(38);

set local client_min_messages = warning;

-- ------------------------------------------------------------------ structure and privileges
select has_function('public', 'search_messages', array['text', 'integer', 'real', 'uuid', 'uuid'],
  'public.search_messages(query, result_limit, before_rank, before_id, in_thread) exists');
select has_function('private', 'search_messages_for', array['uuid', 'text', 'integer', 'real', 'uuid', 'uuid'],
  'private.search_messages_for(user, ...) exists');
select is_definer('public', 'search_messages', array['text', 'integer', 'real', 'uuid', 'uuid'],
  'the frontend''s search is SECURITY DEFINER (RLS would keep the GIN index from being used)');
select ok(
  (select proconfig @> array['search_path=""'] from pg_proc where oid = 'public.search_messages'::regproc),
  'the definer function pins search_path to empty');
select has_index('public', 'messages', 'messages_search_idx', 'a GIN index serves the per-user search');
select is((select attstorage from pg_attribute where attrelid = 'public.messages'::regclass and attname = 'search_tsv'),
  'm'::"char", 'search_tsv stays in the row (storage MAIN): ranking a match reads no TOAST');
select ok(
  (select proconfig @> array['search_path=""', 'plan_cache_mode=force_custom_plan']
   from pg_proc where oid = 'private.search_messages_for'::regproc),
  'the search is planned for each call''s user and words, with an empty search_path');
select ok(has_function_privilege('authenticated', 'public.search_messages(text, integer, real, uuid, uuid)', 'EXECUTE'),
  'authenticated may search');
select ok(not has_function_privilege('anon', 'public.search_messages(text, integer, real, uuid, uuid)', 'EXECUTE'),
  'anon may not search');
select ok(not has_function_privilege('service_role', 'public.search_messages(text, integer, real, uuid, uuid)', 'EXECUTE'),
  'the service role has no signed-in user to search for');
select ok(not has_function_privilege('authenticated',
    'private.search_messages_for(uuid, text, integer, real, uuid, uuid)', 'EXECUTE'),
  'authenticated cannot name another user (private.search_messages_for)');

-- ------------------------------------------------------------------ fixtures (as the service: postgres)
insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values
  ('a8a8a8a8-0000-4000-8000-00000000000a', 'authenticated', 'authenticated', 'search-a@example.test',
   '{"provider":"email","providers":["email"]}', '{}', now(), now()),
  ('b8b8b8b8-0000-4000-8000-00000000000b', 'authenticated', 'authenticated', 'search-b@example.test',
   '{"provider":"email","providers":["email"]}', '{}', now(), now());
insert into public.threads (id, user_id, title, title_source) values
  ('a8a8a8a8-7777-4000-8000-000000000001', 'a8a8a8a8-0000-4000-8000-00000000000a', 'Cats', 'user'),
  ('b8b8b8b8-7777-4000-8000-000000000001', 'b8b8b8b8-0000-4000-8000-00000000000b', 'Travel', 'user');

-- A's messages without a thread go to A's default thread (the threads migration's trigger).
insert into public.messages (id, user_id, thread_id, turn_id, role, content) values
  ('a8a8a8a8-1111-4000-8000-000000000001', 'a8a8a8a8-0000-4000-8000-00000000000a', null,
   'a8a8a8a8-2222-4000-8000-000000000001', 'user', 'My cat Miso sleeps on the sofa all day long'),
  ('a8a8a8a8-1111-4000-8000-000000000002', 'a8a8a8a8-0000-4000-8000-00000000000a',
   'a8a8a8a8-7777-4000-8000-000000000001', 'a8a8a8a8-2222-4000-8000-000000000002', 'assistant',
   'Cats, cats: the cat likes cats'),
  ('a8a8a8a8-1111-4000-8000-000000000003', 'a8a8a8a8-0000-4000-8000-00000000000a', null,
   'a8a8a8a8-2222-4000-8000-000000000003', 'user', 'Моя кошка любит рыбу'),
  ('a8a8a8a8-1111-4000-8000-000000000004', 'a8a8a8a8-0000-4000-8000-00000000000a', null,
   'a8a8a8a8-2222-4000-8000-000000000004', 'assistant', 'The weather is fine today'),
  ('a8a8a8a8-1111-4000-8000-000000000005', 'a8a8a8a8-0000-4000-8000-00000000000a', null,
   'a8a8a8a8-2222-4000-8000-000000000005', 'user', U&'a forged \E000marker\E001 next to the word dog'),
  ('b8b8b8b8-1111-4000-8000-000000000001', 'b8b8b8b8-0000-4000-8000-00000000000b',
   'b8b8b8b8-7777-4000-8000-000000000001', 'b8b8b8b8-2222-4000-8000-000000000001', 'user',
   'My secret is Zanzibar, and my cat');

-- ------------------------------------------------------------------ anon
set local role anon;
select throws_ok($$ select * from public.search_messages('cat') $$, '42501', null, 'anon cannot call the search');
reset role;

-- ------------------------------------------------------------------ user A, as PostgREST calls the function
set local role authenticated;
set local request.jwt.claims = '{"sub":"a8a8a8a8-0000-4000-8000-00000000000a","role":"authenticated"}';

select is_empty($$ select * from public.search_messages('zanzibar') $$, 'A never finds B''s words');
select results_eq(
  $$ select id from public.search_messages('cat') $$,
  $$ values ('a8a8a8a8-1111-4000-8000-000000000002'::uuid), ('a8a8a8a8-1111-4000-8000-000000000001'::uuid) $$,
  'A finds only A''s messages, the one that is most about cats first'
);
select ok(
  (select bool_and(rank > 0) from public.search_messages('cat'))
  and (select rank from public.search_messages('cat') limit 1)
      > (select rank from public.search_messages('cat') offset 1 limit 1),
  'ranks are positive and strictly decreasing here');
select results_eq(
  $$ select thread_id, thread_title, role from public.search_messages('cats') $$,
  $$ values ('a8a8a8a8-7777-4000-8000-000000000001'::uuid, 'Cats'::text, 'assistant'::text),
            ((select id from public.threads where user_id = 'a8a8a8a8-0000-4000-8000-00000000000a' and is_default),
             null::text, 'user'::text) $$,
  'each hit names its thread, the thread''s title and the role (English stemming: cats finds cat)'
);
select is(
  (select snippet from public.search_messages('кошки')),
  U&'Моя \E000кошка\E001 любит рыбу',
  'Russian stemming (кошки finds кошка); a short message is its own snippet, the match between U+E000 and U+E001'
);
select is(
  (select snippet from public.search_messages('dog')),
  U&'a forged marker next to the word \E000dog\E001',
  'markers in a message''s own text are dropped: only matches are marked'
);
select is(
  (select count(*)::int from public.search_messages('"cat likes"')), 1, 'a "phrase" must be found as a phrase');
select results_eq(
  $$ select id from public.search_messages('cat -sofa') $$,
  $$ values ('a8a8a8a8-1111-4000-8000-000000000002'::uuid) $$,
  'an excluded word (-sofa) excludes'
);
select results_eq(
  $$ select id from public.search_messages('кошка or weather') order by id $$,
  $$ values ('a8a8a8a8-1111-4000-8000-000000000003'::uuid), ('a8a8a8a8-1111-4000-8000-000000000004'::uuid) $$,
  'or, across the two languages'
);

-- Keyset paging: each page starts after the previous page's last row; no row twice, none skipped.
select results_eq(
  $$ select id from public.search_messages('cat', 1) $$,
  $$ values ('a8a8a8a8-1111-4000-8000-000000000002'::uuid) $$,
  'page 1 of 1 row'
);
select results_eq(
  $$ select p2.id from public.search_messages('cat', 1) p1,
       lateral public.search_messages('cat', 1, p1.rank, p1.id) p2 $$,
  $$ values ('a8a8a8a8-1111-4000-8000-000000000001'::uuid) $$,
  'page 2 starts after page 1''s last row'
);
select is_empty(
  $$ select p3.id from public.search_messages('cat', 1) p1,
       lateral public.search_messages('cat', 1, p1.rank, p1.id) p2,
       lateral public.search_messages('cat', 1, p2.rank, p2.id) p3 $$,
  'page 3 is empty'
);

-- The thread filter.
select results_eq(
  $$ select id from public.search_messages('cat', in_thread => 'a8a8a8a8-7777-4000-8000-000000000001') $$,
  $$ values ('a8a8a8a8-1111-4000-8000-000000000002'::uuid) $$,
  'in_thread keeps one thread'
);
select is_empty(
  $$ select * from public.search_messages('cat', in_thread => 'b8b8b8b8-7777-4000-8000-000000000001') $$,
  'B''s thread yields nothing to A'
);

-- Bounded queries: refused with 22023 (PostgREST: 400) and a sentence.
select throws_ok($$ select * from public.search_messages('   ') $$, '22023', 'the search query is empty',
  'an empty query is refused');
select throws_ok($$ select * from public.search_messages(repeat('cat ', 51)) $$, '22023',
  'the search query is longer than 200 characters', 'a query over 200 characters is refused');
select throws_ok($$ select * from public.search_messages('the and of и в') $$, '22023',
  'the search query has no word to look for (only common words, punctuation or excluded words)',
  'stop words only are refused');
select throws_ok($$ select * from public.search_messages('-cat') $$, '22023', null,
  'excluded words only are refused (they would need every message)');
select throws_ok($$ select * from public.search_messages('!!! ...') $$, '22023', null,
  'punctuation only is refused');
select throws_ok($$ select * from public.search_messages('cat', 0) $$, '22023', null, 'result_limit 0 is refused');
select throws_ok($$ select * from public.search_messages('cat', 101) $$, '22023', null, 'result_limit 101 is refused');
select throws_ok($$ select * from public.search_messages('cat', 10, 0.5) $$, '22023', null, 'half a cursor is refused');
select throws_ok($$ select * from private.search_messages_for('b8b8b8b8-0000-4000-8000-00000000000b', 'cat', 10, null, null, null) $$,
  '42501', null, 'A cannot call the service''s function to name B');

-- ------------------------------------------------------------------ user B
set local request.jwt.claims = '{"sub":"b8b8b8b8-0000-4000-8000-00000000000b","role":"authenticated"}';
select results_eq(
  $$ select id from public.search_messages('cat') $$,
  $$ values ('b8b8b8b8-1111-4000-8000-000000000001'::uuid) $$,
  'B finds only B''s cat'
);

-- ------------------------------------------------------------------ no user in the token
set local request.jwt.claims = '{"role":"authenticated"}';
select throws_ok($$ select * from public.search_messages('cat') $$, '42501', 'searching needs a signed-in user',
  'a token without a user finds nothing');

-- ------------------------------------------------------------------ deleting a thread takes its messages out of the search
reset role;
delete from public.threads where id = 'a8a8a8a8-7777-4000-8000-000000000001';
select results_eq(
  $$ select id from private.search_messages_for('a8a8a8a8-0000-4000-8000-00000000000a', 'cat', 20, null, null, null) $$,
  $$ values ('a8a8a8a8-1111-4000-8000-000000000001'::uuid) $$,
  'the deleted thread''s message is gone from the search (as the service calls it)'
);

select * from finish();
rollback;
