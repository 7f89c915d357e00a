-- Rate limits for callers who are not signed in: the auth pass-through (/api/v1/auth/register|login|refresh)
-- limits each client IP and each email address, shared by every service replica.
--
-- The same GCRA as private.rate_limit_hit (migration 20261121000300_rate_limits, which explains the algorithm,
-- its guarantees and why one `insert ... on conflict do update ... where` is exact across replicas), keyed by
-- a text key instead of a user: the subjects are anonymous, so there is no auth.users row to hang them on.
--
-- Keys are digests, never the raw IP or email: the service sends HMAC-SHA256(secret, subject) in hex, and the
-- check constraint refuses anything else, so a bug cannot store an address here.
--
-- Growth: one row per (bucket, key) that was hit in the last window. A row whose tat has passed is a full
-- bucket, exactly like no row at all (both admit the next hit and set tat = now + T), so deleting it changes no
-- decision. Every admitted hit deletes up to four such expired rows (any bucket, oldest first, skipping rows
-- another transaction holds, so it never waits): each hit adds at most one row and retires up to four, so the
-- table stays at about the rows that are live (hit within their window), with no job to schedule. Refused hits
-- still write nothing.

create table private.rate_limit_key_counters (
  -- Named by the service ("auth.login.ip", ...): the pattern keeps a bug from minting unbounded buckets.
  bucket text        not null check (bucket ~ '^[a-z0-9_.:-]{1,64}$'),
  -- A SHA-256 digest in lowercase hex: a raw IP or email address cannot match.
  key    text        not null check (key ~ '^[0-9a-f]{64}$'),
  -- GCRA's theoretical arrival time; a value in the past means the bucket is full again.
  tat    timestamptz not null,
  primary key (bucket, key)
);
comment on table private.rate_limit_key_counters is
  'GCRA state per (bucket, hashed IP or email) for private.rate_limit_hit_key(); only the service touches it.';

-- For the clean-up: the oldest expired rows first.
create index rate_limit_key_counters_tat_idx on private.rate_limit_key_counters (tat);

alter table private.rate_limit_key_counters enable row level security;
alter table private.rate_limit_key_counters force row level security;
revoke all on private.rate_limit_key_counters from public, anon, authenticated;

-- Records one hit for (p_key, p_bucket) and says whether it is admitted: private.rate_limit_hit's semantics.
-- SECURITY INVOKER for the same reason as private.rate_limit_hit: only the service (postgres) calls it.
create or replace function private.rate_limit_hit_key(
  p_key            text,
  p_bucket         text,
  p_limit          integer,
  p_window_seconds integer
)
returns table (allowed boolean, remaining integer, retry_after_seconds integer)
language plpgsql
security invoker
set search_path = ''
as $$
declare
  -- Read once, before the row lock: waiting for the lock only makes `now` earlier, i.e. stricter.
  v_now   timestamptz := clock_timestamp();
  v_step  interval;  -- T, rounded up to a whole microsecond
  v_burst interval;  -- L * T, the most that tat may run ahead of now
  v_tat   timestamptz;
begin
  if p_key is null or p_bucket is null
     or p_limit is null or p_limit < 1 or p_window_seconds is null or p_window_seconds < 1 then
    raise exception 'rate_limit_hit_key: need a key, a bucket, limit >= 1 and window >= 1 s (got %, %, %)',
      p_bucket, p_limit, p_window_seconds
      using errcode = '22023';
  end if;
  v_step := ((p_window_seconds::bigint * 1000000 + p_limit - 1) / p_limit) * interval '1 microsecond';
  v_burst := v_step * p_limit;

  -- The whole decision. A refused hit matches no row (so FOUND is false) but still locks the row.
  insert into private.rate_limit_key_counters as c (bucket, key, tat)
  values (p_bucket, p_key, v_now + v_step)
  on conflict (bucket, key) do update
    set tat = greatest(c.tat, v_now) + v_step
    where greatest(c.tat, v_now) + v_step - v_now <= v_burst
  returning c.tat into v_tat;

  if found then
    allowed := true;
    remaining := floor(extract(epoch from v_burst - (v_tat - v_now)) / extract(epoch from v_step))::integer;
    retry_after_seconds := 0;

    -- Bounded growth (see the top of this file). FOR UPDATE re-checks `tat < v_now` on the newest version of
    -- each row it locks, and SKIP LOCKED passes over rows being hit right now: a live row is never deleted.
    delete from private.rate_limit_key_counters as c
    where (c.bucket, c.key) in (
      select e.bucket, e.key
      from private.rate_limit_key_counters as e
      where e.tat < v_now
      order by e.tat
      limit 4
      for update skip locked
    );
  else
    -- We hold the row lock, so this is the state that refused us.
    select c.tat into v_tat
    from private.rate_limit_key_counters as c
    where c.bucket = p_bucket and c.key = p_key;
    allowed := false;
    remaining := 0;
    retry_after_seconds := greatest(1, ceil(extract(epoch from (v_tat + v_step - v_burst) - v_now)))::integer;
  end if;
  return next;
end;
$$;
revoke all on function private.rate_limit_hit_key(text, text, integer, integer) from public, anon, authenticated;
