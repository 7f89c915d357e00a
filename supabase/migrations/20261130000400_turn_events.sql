-- Resumable streams: each turn's events (turn, delta, tool, usage, error, done), numbered from 1, kept for a
-- while after the turn so that a client that lost its stream (a reload, a dropped network, another device,
-- another replica) gets exactly the events after the last one it saw (service/chat/journal.py). Written in
-- batches by the replica running the turn, and completed by the recovery when that replica died. Deleted an
-- hour (TURN_RESUME_SECONDS) after they were written.
create table private.turn_events (
  turn_id    uuid        not null,
  seq        integer     not null check (seq > 0),
  user_id    uuid        not null references auth.users (id) on delete cascade,
  name       text        not null,
  data       jsonb       not null,
  created_at timestamptz not null default now(),
  primary key (turn_id, seq)
);

create index turn_events_created_at_idx on private.turn_events (created_at);
create index turn_events_user_id_idx on private.turn_events (user_id);

alter table private.turn_events enable row level security;
alter table private.turn_events force row level security;
revoke all on private.turn_events from public, anon, authenticated;
