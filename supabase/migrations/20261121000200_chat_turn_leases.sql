-- One running chat turn per user, across every service replica.
--
-- A Letta agent is not safe for concurrent messages, so a turn takes this lease first. The lease is
-- a row, not a held transaction or advisory lock: no connection stays open for the length of a
-- stream. The turn renews expires_at while it runs; if its replica dies, the lease simply expires.
-- cancel_requested lets a cancel reach the turn from any replica (the turn polls it as it renews).
create table private.chat_turn_leases (
  user_id          uuid primary key references auth.users (id) on delete cascade,
  turn_id          uuid not null,
  holder           text not null,
  letta_run_id     text,
  cancel_requested boolean not null default false,
  acquired_at      timestamptz not null default now(),
  expires_at       timestamptz not null
);

alter table private.chat_turn_leases enable row level security;
alter table private.chat_turn_leases force row level security;
revoke all on private.chat_turn_leases from public, anon, authenticated;
