-- The one GCRA (private.gcra_step, migration 20261130001000_gcra_helper) at its edges, on a fixed clock: a fresh or
-- idle counter, the emission interval rounded up, the exact edge of the burst, refusals and their Retry-After, a
-- sequence threaded through it, nonsense limits, a time zone with a DST change; and the two functions built on it.
begin;
select plan(33);

-- ------------------------------------------------------------------ what it is
select has_function('private', 'gcra_step', array['timestamp with time zone', 'timestamp with time zone', 'integer',
  'integer'], 'private.gcra_step(tat, now, limit, window) exists');
select volatility_is('private', 'gcra_step', array['timestamp with time zone', 'timestamp with time zone', 'integer',
  'integer'], 'immutable', 'private.gcra_step is IMMUTABLE (pure)');
select isnt_definer('private', 'gcra_step', array['timestamp with time zone', 'timestamp with time zone', 'integer',
  'integer'], 'private.gcra_step is SECURITY INVOKER');
select ok(
  not has_function_privilege('anon', 'private.gcra_step(timestamptz, timestamptz, integer, integer)', 'execute')
  and not has_function_privilege('authenticated', 'private.gcra_step(timestamptz, timestamptz, integer, integer)',
    'execute'),
  'anon and authenticated cannot call private.gcra_step'
);
-- The two callers kept their settings.
select isnt_definer('private', 'rate_limit_hit', array['uuid', 'text', 'integer', 'integer'],
  'private.rate_limit_hit is still SECURITY INVOKER');
select is(
  (select proconfig from pg_proc where oid = 'private.rate_limit_hit(uuid, text, integer, integer)'::regprocedure),
  array['search_path=""'], 'private.rate_limit_hit still runs with an empty search_path');
select ok(
  not has_function_privilege('anon', 'private.rate_limit_hit(uuid, text, integer, integer)', 'execute')
  and not has_function_privilege('authenticated', 'private.rate_limit_hit(uuid, text, integer, integer)', 'execute'),
  'anon and authenticated still cannot call private.rate_limit_hit'
);

-- ------------------------------------------------------------------ fresh and idle counters
-- 5 per 60 s: T = 12 s, a burst of 5.
select results_eq(
  $$ select * from private.gcra_step(null, '2026-01-01 00:00:00+00', 5, 60) $$,
  $$ values ('2026-01-01 00:00:12+00'::timestamptz, true, 4, 0) $$,
  'no state: admitted, tat = now + T, 4 more admissible now'
);
select results_eq(
  $$ select * from private.gcra_step('2025-12-31 23:00:00+00', '2026-01-01 00:00:00+00', 5, 60) $$,
  $$ select * from private.gcra_step(null, '2026-01-01 00:00:00+00', 5, 60) $$,
  'a counter idle past its tat is a full bucket, the same as no state'
);
select results_eq(
  $$ select * from private.gcra_step('2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00', 5, 60) $$,
  $$ select * from private.gcra_step(null, '2026-01-01 00:00:00+00', 5, 60) $$,
  'tat exactly now is a full bucket too'
);

-- ------------------------------------------------------------------ the emission interval rounds UP
-- 3 per second: T = 333334 us (not 333333), so 3 hits never take less than a second of credit.
select is(
  (select new_tat from private.gcra_step(null, '2026-01-01 00:00:00+00', 3, 1)),
  '2026-01-01 00:00:00.333334+00'::timestamptz,
  'T = ceil(W / L) to the microsecond'
);
select is(
  (select allowed from private.gcra_step('2026-01-01 00:00:00.666668+00', '2026-01-01 00:00:00+00', 3, 1)),
  true,
  'the third hit of a burst is admitted (tat + T = L * T exactly)'
);
select is(
  (select remaining from private.gcra_step('2026-01-01 00:00:00.666668+00', '2026-01-01 00:00:00+00', 3, 1)), 0,
  'and leaves none'
);

-- ------------------------------------------------------------------ the edge of the burst
-- 5 per 60 s with tat = now + 48 s: the next tat is now + 60 s = L * T ahead, the most allowed.
select results_eq(
  $$ select * from private.gcra_step('2026-01-01 00:00:48+00', '2026-01-01 00:00:00+00', 5, 60) $$,
  $$ values ('2026-01-01 00:01:00+00'::timestamptz, true, 0, 0) $$,
  'exactly at the edge: admitted, none left'
);
select results_eq(
  $$ select * from private.gcra_step('2026-01-01 00:00:48.000001+00', '2026-01-01 00:00:00+00', 5, 60) $$,
  $$ values ('2026-01-01 00:00:48.000001+00'::timestamptz, false, 0, 1) $$,
  'one microsecond past the edge: refused, tat unchanged, Retry-After at least 1 s'
);

-- ------------------------------------------------------------------ refusals and Retry-After
select results_eq(
  $$ select * from private.gcra_step('2026-01-01 00:01:00+00', '2026-01-01 00:00:00+00', 5, 60) $$,
  $$ values ('2026-01-01 00:01:00+00'::timestamptz, false, 0, 12) $$,
  'a spent bucket waits one T (12 s) for the next hit, not the window'
);
select is(
  (select retry_after_seconds from private.gcra_step('2026-01-01 00:00:50.5+00', '2026-01-01 00:00:00+00', 5, 60)),
  3, 'Retry-After is rounded up to a whole second (2.5 s -> 3)'
);
select is(
  (select allowed from private.gcra_step('2026-01-01 00:00:50.5+00', '2026-01-01 00:00:02.5+00', 5, 60)),
  true, 'and a hit that waits exactly that long (to the microsecond) is admitted'
);
select is(
  (select allowed from private.gcra_step('2026-01-01 00:00:50.5+00', '2026-01-01 00:00:02.499999+00', 5, 60)),
  false, 'a microsecond earlier it is not'
);

-- ------------------------------------------------------------------ a sequence of hits at one instant
with recursive hits (n, tat, allowed, remaining, retry) as (
  select 1, g.new_tat, g.allowed, g.remaining, g.retry_after_seconds
  from private.gcra_step(null, '2026-01-01 00:00:00+00', 5, 60) g
  union all
  select h.n + 1, g.new_tat, g.allowed, g.remaining, g.retry_after_seconds
  from hits h, private.gcra_step(h.tat, '2026-01-01 00:00:00+00', 5, 60) g
  where h.n < 7
)
select is(
  (select array_agg(row(allowed, remaining, retry)::text order by n) from hits),
  array['(t,4,0)', '(t,3,0)', '(t,2,0)', '(t,1,0)', '(t,0,0)', '(f,0,12)', '(f,0,12)'],
  'a burst of exactly L, remaining counting down, then refusals that change nothing'
);

-- ------------------------------------------------------------------ limits at their bounds
select results_eq(
  $$ select * from private.gcra_step(null, '2026-01-01 00:00:00+00', 1, 2147483647) $$,
  $$ values ('2026-01-01 00:00:00+00'::timestamptz + interval '2147483647 seconds', true, 0, 0) $$,
  'limit 1 over the longest window: no overflow'
);
select results_eq(
  $$ select * from private.gcra_step('2026-01-01 00:00:00+00'::timestamptz + interval '2147483647 seconds',
       '2026-01-01 00:00:00+00', 1, 2147483647) $$,
  $$ values ('2026-01-01 00:00:00+00'::timestamptz + interval '2147483647 seconds', false, 0, 2147483647) $$,
  'and its refusal waits the whole window'
);
select is(
  (select remaining from private.gcra_step(null, '2026-01-01 00:00:00+00', 2147483647, 1)), 2147483646,
  'the largest limit: T rounds up to 1 us, and remaining still fits an integer'
);
select throws_ok(
  $$ select * from private.gcra_step(null, now(), 0, 60) $$, '22023', null, 'limit 0 is refused'
);
select throws_ok(
  $$ select * from private.gcra_step(null, now(), 5, 0) $$, '22023', null, 'window 0 is refused'
);
select throws_ok(
  $$ select * from private.gcra_step(null, null, 5, 60) $$, '22023', null, 'a hit needs a time'
);
select throws_ok(
  $$ select * from private.gcra_step(null, now(), null, 60) $$, '22023', null, 'a null limit is refused'
);

-- ------------------------------------------------------------------ no time zone changes a decision
-- New York's clocks went forward at 07:00 UTC on 2026-03-08: an hour of credit is still 3600 s.
set local timezone = 'America/New_York';
select is(
  (select new_tat from private.gcra_step(null, '2026-03-08 06:30:00+00', 1, 3600)),
  '2026-03-08 07:30:00+00'::timestamptz,
  'T across a DST change is exact seconds'
);
select is(
  (select retry_after_seconds from private.gcra_step('2026-03-08 07:30:00+00', '2026-03-08 06:30:00+00', 1, 3600)),
  3600, 'and so is Retry-After'
);
reset timezone;

-- ------------------------------------------------------------------ the functions built on it
insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values ('45454545-0000-4000-8000-000000000045', 'authenticated', 'authenticated', 'gcra@example.test',
  '{"provider":"email","providers":["email"]}', '{}', now(), now());
select is(
  (select array_agg(row(h.allowed, h.remaining)::text order by i)
   -- (3 + 0 * i: a lateral reference, so that the function runs once per row, in order)
   from generate_series(1, 4) i
   cross join lateral private.rate_limit_hit('45454545-0000-4000-8000-000000000045', 'tap', 3 + 0 * i, 3600) h),
  array['(t,2)', '(t,1)', '(t,0)', '(f,0)'],
  'rate_limit_hit: a burst of 3, then a refusal'
);
select ok(
  (select tat between now() + interval '3599 seconds' and clock_timestamp() + interval '3600 seconds'
   from private.rate_limit_counters where user_id = '45454545-0000-4000-8000-000000000045' and bucket = 'tap'),
  'its counter holds the tat of the three admitted hits (the refusal wrote nothing)'
);
select is(
  (select array_agg(row(h.allowed, h.remaining)::text order by i)
   from generate_series(1, 3) i cross join lateral private.rate_limit_hit_key(repeat('d', 64), 'tap', 2 + 0 * i, 3600) h),
  array['(t,1)', '(t,0)', '(f,0)'],
  'rate_limit_hit_key: the same GCRA'
);
select throws_ok(
  $$ select * from private.rate_limit_hit('45454545-0000-4000-8000-000000000045', 'tap', 3, 0) $$,
  '22023', 'rate_limit_hit: need a user, a bucket, limit >= 1 and window >= 1 s (got 45454545-0000-4000-8000-000000000045, tap, 3, 0)',
  'rate_limit_hit keeps its own error'
);

select * from finish();
rollback;
