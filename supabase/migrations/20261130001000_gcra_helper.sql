-- One GCRA for both counter tables: private.gcra_step() holds the arithmetic that private.rate_limit_hit (per user,
-- migration 20261121000300_rate_limits, which explains the algorithm and its guarantees) and
-- private.rate_limit_hit_key (per anonymous subject, migration 20261130000100_client_rate_limits) each spelt out.
-- Both functions keep their signatures, results, errors, privileges and SECURITY INVOKER; only how a hit is
-- decided inside them changes: lock the counter's row (or create it), judge its state with the helper, write.
--
-- Correctness across replicas: a hit decides against the row's latest version while holding its lock, so hits on
-- one counter from any number of connections are serialised and never over-admit (the `insert ... on conflict do
-- update` of the earlier definition made the same guarantee by judging in its WHERE). The clock is still the
-- database's, read once before the lock. Writes are as before: an admitted hit writes one row version, a refused
-- hit only locks the row, and the per-key table still retires up to four expired rows per admitted hit.

-- A hit on a counter whose theoretical arrival time is p_tat (null: no state, i.e. a full bucket), at p_now, for a
-- limit of p_limit hits per p_window_seconds: whether it is admitted, the tat to store then (p_tat unchanged when
-- refused), how many more hits would be admitted right now, and in how many whole seconds the next hit will be
-- (0 when admitted). Pure: IMMUTABLE although timestamptz +/- interval is only STABLE in general, because every
-- interval here is whole microseconds (no days or months), which no time zone setting changes.
create function private.gcra_step(
  p_tat            timestamptz,
  p_now            timestamptz,
  p_limit          integer,
  p_window_seconds integer,
  out new_tat             timestamptz,
  out allowed             boolean,
  out remaining           integer,
  out retry_after_seconds integer
)
language plpgsql
immutable
parallel safe
security invoker
set search_path = ''
as $$
declare
  v_step  interval;     -- T = W / L, rounded UP to a whole microsecond (so L / W is never exceeded)
  v_burst interval;     -- L * T, the most that tat may run ahead of now
  v_next  timestamptz;  -- tat after this hit, if it is admitted
begin
  if p_now is null or p_limit is null or p_limit < 1 or p_window_seconds is null or p_window_seconds < 1 then
    raise exception 'gcra_step: need a time, limit >= 1 and window >= 1 s (got %, %, %)',
      p_now, p_limit, p_window_seconds
      using errcode = '22023';
  end if;
  v_step := ((p_window_seconds::bigint * 1000000 + p_limit - 1) / p_limit) * interval '1 microsecond';
  v_burst := v_step * p_limit;
  v_next := greatest(p_tat, p_now) + v_step;  -- greatest() skips a null: no state counts from now

  if v_next - p_now <= v_burst then
    new_tat := v_next;
    allowed := true;
    remaining := floor(extract(epoch from v_burst - (v_next - p_now)) / extract(epoch from v_step))::integer;
    retry_after_seconds := 0;
  else
    -- Only a counter ahead of now refuses (a full bucket admits L >= 1 hits), so p_tat is not null here.
    new_tat := p_tat;
    allowed := false;
    remaining := 0;
    -- The next hit is admitted once now >= tat + T - L*T.
    retry_after_seconds := greatest(1, ceil(extract(epoch from (p_tat + v_step - v_burst) - p_now)))::integer;
  end if;
end;
$$;
revoke all on function private.gcra_step(timestamptz, timestamptz, integer, integer) from public, anon, authenticated;

-- Records one hit and says whether it is admitted. SECURITY INVOKER on purpose: only the service
-- (postgres, BYPASSRLS) may call it, and it already owns these rights; DEFINER would add nothing but
-- a privilege-escalation surface should EXECUTE ever be granted by mistake.
create or replace function private.rate_limit_hit(
  p_user_id        uuid,
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
  v_now timestamptz := clock_timestamp();
  v_tat timestamptz;
  v_hit record;
begin
  if p_user_id is null or p_bucket is null
     or p_limit is null or p_limit < 1 or p_window_seconds is null or p_window_seconds < 1 then
    raise exception 'rate_limit_hit: need a user, a bucket, limit >= 1 and window >= 1 s (got %, %, %, %)',
      p_user_id, p_bucket, p_limit, p_window_seconds
      using errcode = '22023';
  end if;

  -- No row yet: the first hit on a full bucket, always admitted, creates it. A row: ON CONFLICT DO UPDATE locks
  -- it even though its WHERE is false (and writes nothing), so concurrent hits on it queue here.
  v_hit := private.gcra_step(null, v_now, p_limit, p_window_seconds);
  insert into private.rate_limit_counters as c (user_id, bucket, tat)
  values (p_user_id, p_bucket, v_hit.new_tat)
  on conflict (user_id, bucket) do update set tat = c.tat where false;

  if not found then
    -- We hold the row lock: this is its latest state, and no one else changes it before we commit.
    select c.tat into v_tat
    from private.rate_limit_counters as c
    where c.user_id = p_user_id and c.bucket = p_bucket;
    v_hit := private.gcra_step(v_tat, v_now, p_limit, p_window_seconds);
    if v_hit.allowed then
      update private.rate_limit_counters as c set tat = v_hit.new_tat
      where c.user_id = p_user_id and c.bucket = p_bucket;
    end if;
  end if;

  allowed := v_hit.allowed;
  remaining := v_hit.remaining;
  retry_after_seconds := v_hit.retry_after_seconds;
  return next;
end;
$$;
revoke all on function private.rate_limit_hit(uuid, text, integer, integer) from public, anon, authenticated;

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
  v_now timestamptz := clock_timestamp();
  v_tat timestamptz;
  v_hit record;
begin
  if p_key is null or p_bucket is null
     or p_limit is null or p_limit < 1 or p_window_seconds is null or p_window_seconds < 1 then
    raise exception 'rate_limit_hit_key: need a key, a bucket, limit >= 1 and window >= 1 s (got %, %, %)',
      p_bucket, p_limit, p_window_seconds
      using errcode = '22023';
  end if;

  -- Create the row, or lock it: as in private.rate_limit_hit.
  v_hit := private.gcra_step(null, v_now, p_limit, p_window_seconds);
  insert into private.rate_limit_key_counters as c (bucket, key, tat)
  values (p_bucket, p_key, v_hit.new_tat)
  on conflict (bucket, key) do update set tat = c.tat where false;

  if not found then
    -- We hold the row lock: this is its latest state, and no one else changes it before we commit.
    select c.tat into v_tat
    from private.rate_limit_key_counters as c
    where c.bucket = p_bucket and c.key = p_key;
    v_hit := private.gcra_step(v_tat, v_now, p_limit, p_window_seconds);
    if v_hit.allowed then
      update private.rate_limit_key_counters as c set tat = v_hit.new_tat
      where c.bucket = p_bucket and c.key = p_key;
    end if;
  end if;

  if v_hit.allowed then
    -- Bounded growth (migration 20261130000100_client_rate_limits). FOR UPDATE re-checks `tat < v_now` on the
    -- newest version of each row it locks, and SKIP LOCKED passes over rows being hit right now: a live row is
    -- never deleted (nor ours, whose tat is now ahead of v_now).
    delete from private.rate_limit_key_counters as c
    where (c.bucket, c.key) in (
      select e.bucket, e.key
      from private.rate_limit_key_counters as e
      where e.tat < v_now
      order by e.tat
      limit 4
      for update skip locked
    );
  end if;

  allowed := v_hit.allowed;
  remaining := v_hit.remaining;
  retry_after_seconds := v_hit.retry_after_seconds;
  return next;
end;
$$;
revoke all on function private.rate_limit_hit_key(text, text, integer, integer) from public, anon, authenticated;
