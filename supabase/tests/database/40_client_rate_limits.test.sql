-- Rate limits for callers who are not signed in (migration 20261130000100_client_rate_limits): only the service
-- reaches them, only digests are stored, GCRA decisions, and the clean-up of expired rows.
begin;
select plan(20);

-- ------------------------------------------------------------------ structure and privileges
select has_table('private', 'rate_limit_key_counters', 'private.rate_limit_key_counters exists');
select col_is_pk('private', 'rate_limit_key_counters', array['bucket', 'key'], 'one row per (bucket, key)');
select has_index('private', 'rate_limit_key_counters', 'rate_limit_key_counters_tat_idx', 'tat',
  'expired rows are found by tat');
select ok(
  (select relrowsecurity and relforcerowsecurity from pg_class
   where oid = 'private.rate_limit_key_counters'::regclass),
  'RLS is enabled and forced on private.rate_limit_key_counters'
);
select table_privs_are('private', 'rate_limit_key_counters', 'anon', array[]::text[], 'anon: no access to the counters');
select table_privs_are('private', 'rate_limit_key_counters', 'authenticated', array[]::text[],
  'authenticated: no access to the counters');
select ok(
  not has_function_privilege('anon', 'private.rate_limit_hit_key(text, text, integer, integer)', 'execute')
  and not has_function_privilege('authenticated', 'private.rate_limit_hit_key(text, text, integer, integer)', 'execute'),
  'anon and authenticated cannot call private.rate_limit_hit_key'
);
select isnt_definer('private', 'rate_limit_hit_key', array['text', 'text', 'integer', 'integer'],
  'private.rate_limit_hit_key is SECURITY INVOKER');
select is(
  (select proconfig from pg_proc where oid = 'private.rate_limit_hit_key(text, text, integer, integer)'::regprocedure),
  array['search_path=""'],
  'private.rate_limit_hit_key runs with an empty search_path'
);

-- ------------------------------------------------------------------ digests only
select throws_ok(
  $$ insert into private.rate_limit_key_counters (bucket, key, tat) values ('auth.login.email', 'ada@example.com', now()) $$,
  '23514', null, 'a raw email address is not a key'
);
select throws_ok(
  $$ select * from private.rate_limit_hit_key('198.51.100.7', 'auth.login.ip', 5, 60) $$,
  '23514', null, 'nor is a raw IP address, through the function'
);
select throws_ok(
  $$ select * from private.rate_limit_hit_key(repeat('a', 64), 'Login Per IP', 5, 60) $$,
  '23514', null, 'bucket names follow the same pattern as the per-user counters'
);
select throws_ok(
  $$ select * from private.rate_limit_hit_key(repeat('a', 64), 'auth.login.ip', 0, 60) $$,
  '22023', null, 'a limit below 1 is refused'
);

-- ------------------------------------------------------------------ GCRA: 2 per hour
select is((select allowed from private.rate_limit_hit_key(repeat('a', 64), 'tap', 2, 3600)), true, 'first hit admitted');
select is((select remaining from private.rate_limit_hit_key(repeat('a', 64), 'tap', 2, 3600)), 0,
  'second hit admitted, none left');
select ok(
  (select not allowed and retry_after_seconds between 1799 and 1800
   from private.rate_limit_hit_key(repeat('a', 64), 'tap', 2, 3600)),
  'third hit refused, retry when one hit is earned back (1800 s)'
);
select is((select allowed from private.rate_limit_hit_key(repeat('c', 64), 'tap', 2, 3600)), true,
  'another key has its own counter');

-- ------------------------------------------------------------------ clean-up of expired rows
insert into private.rate_limit_key_counters (bucket, key, tat)
select 'tap.old', encode(sha256(convert_to(i::text, 'UTF8')), 'hex'), now() - interval '1 hour'
from generate_series(1, 6) as i;

select is((select allowed from private.rate_limit_hit_key(repeat('b', 64), 'tap', 2, 3600)), true, 'a new key admitted');
select is((select count(*) from private.rate_limit_key_counters where bucket = 'tap.old'), 2::bigint,
  'an admitted hit deleted four expired rows');
select results_eq(
  $$ select allowed, (select count(*) from private.rate_limit_key_counters where bucket = 'tap.old')
     from private.rate_limit_hit_key(repeat('a', 64), 'tap', 2, 3600) $$,
  $$ values (false, 2::bigint) $$,
  'a refused hit deletes nothing'
);

select * from finish();
rollback;
