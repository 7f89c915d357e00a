-- Per-user rate limits, shared by every service replica.
--
-- Algorithm: GCRA (the generic cell rate algorithm, i.e. a token bucket stored as one timestamp).
-- For a limit of L hits per W seconds the emission interval is T = W / L (rounded UP to a microsecond,
-- so the sustained rate never exceeds L / W) and each (user, bucket) keeps only its "theoretical
-- arrival time" tat. A hit at time now is admitted iff  greatest(tat, now) + T - now <= L * T,
-- and then tat := greatest(tat, now) + T. Guarantees:
--   * a burst never exceeds L (a fresh or idle bucket admits exactly L back to back);
--   * afterwards hits are admitted at most one per T, so the long-run rate is at most L per W;
--   * over any span of length D at most L + floor(D / T) hits are admitted: a client that was idle
--     can spend its burst and then keep the steady rate, so a window-long span holds < 2L in the
--     worst case. This is the same bound as a fixed window's edge burst, but without fixed edges,
--     and abuse is capped at exactly the configured rate.
--   * Retry-After is exact (the moment the next hit would be admitted), not "the next window".
-- Chosen over a weighted two-window counter because it needs one column, no window arithmetic and
-- gives an exact retry time; a strict "<= L in every window" would need a log of L timestamps per row.
--
-- Correctness across replicas: the decision is ONE `insert ... on conflict do update ... where`
-- statement. Postgres locks the conflicting row and evaluates the WHERE against its latest version,
-- so concurrent hits on one (user, bucket) from any number of connections are serialised and never
-- over-admit. The clock is the database's (clock_timestamp()), so replica clock skew does not matter.
--
-- Growth: one row per (user, bucket), overwritten in place; bucket names come from the service's
-- configuration (a handful), and rows go with the user (on delete cascade). Refused hits write nothing,
-- so a client hammering a full bucket produces no dead tuples.

create table private.rate_limit_counters (
  user_id uuid        not null references auth.users (id) on delete cascade,
  -- Named by the service ("chat", "memory", ...); the pattern keeps a bug from minting unbounded keys.
  bucket  text        not null check (bucket ~ '^[a-z0-9_.:-]{1,64}$'),
  -- GCRA's theoretical arrival time; a value in the past means the bucket is full again.
  tat     timestamptz not null,
  -- (user_id, bucket) leads with user_id: also the index for the FK's cascade deletes.
  primary key (user_id, bucket)
);
comment on table private.rate_limit_counters is
  'GCRA state per (user, bucket) for private.rate_limit_hit(); only the service touches it.';

alter table private.rate_limit_counters enable row level security;
alter table private.rate_limit_counters force row level security;
revoke all on private.rate_limit_counters from public, anon, authenticated;

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
  v_now   timestamptz := clock_timestamp();
  v_step  interval;  -- T, rounded up to a whole microsecond
  v_burst interval;  -- L * T, the most that tat may run ahead of now
  v_tat   timestamptz;
begin
  if p_user_id is null or p_bucket is null
     or p_limit is null or p_limit < 1 or p_window_seconds is null or p_window_seconds < 1 then
    raise exception 'rate_limit_hit: need a user, a bucket, limit >= 1 and window >= 1 s (got %, %, %, %)',
      p_user_id, p_bucket, p_limit, p_window_seconds
      using errcode = '22023';
  end if;
  v_step := ((p_window_seconds::bigint * 1000000 + p_limit - 1) / p_limit) * interval '1 microsecond';
  v_burst := v_step * p_limit;

  -- The whole decision. A refused hit matches no row (so FOUND is false) but still locks the row.
  insert into private.rate_limit_counters as c (user_id, bucket, tat)
  values (p_user_id, p_bucket, v_now + v_step)
  on conflict (user_id, bucket) do update
    set tat = greatest(c.tat, v_now) + v_step
    where greatest(c.tat, v_now) + v_step - v_now <= v_burst
  returning c.tat into v_tat;

  if found then
    allowed := true;
    -- How many more hits would be admitted right now.
    remaining := floor(extract(epoch from v_burst - (v_tat - v_now)) / extract(epoch from v_step))::integer;
    retry_after_seconds := 0;
  else
    -- We hold the row lock, so this is the state that refused us.
    select c.tat into v_tat
    from private.rate_limit_counters as c
    where c.user_id = p_user_id and c.bucket = p_bucket;
    allowed := false;
    remaining := 0;
    -- The next hit is admitted once now >= tat + T - L*T.
    retry_after_seconds := greatest(1, ceil(extract(epoch from (v_tat + v_step - v_burst) - v_now)))::integer;
  end if;
  return next;
end;
$$;
revoke all on function private.rate_limit_hit(uuid, text, integer, integer) from public, anon, authenticated;
