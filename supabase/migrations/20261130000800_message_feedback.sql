-- Feedback on the assistant's replies: thumbs up or down and an optional comment, one per message, changeable.
--
-- The service writes a row only for its user's own assistant message (user_id is copied from the message in the
-- same statement, service/chat/feedback.py); the history and the export show it with the message. When the reply's
-- Letta step is known, the rating is also sent to Letta's step feedback (PATCH /v1/steps/{id}/feedback:
-- 'up' -> positive, 'down' -> negative, a removed row -> null). That is best effort, after the request:
-- letta_step_id is the step once found, letta_sent_at when Letta last accepted this row's rating (null: not
-- yet, or it failed; a change of rating sets it back to null). The comment stays here: Letta's steps have no
-- field for it.
create table public.message_feedback (
  message_id    uuid primary key references public.messages (id) on delete cascade,
  user_id       uuid not null references public.user_profiles (id) on delete cascade,
  -- Text, not ±1: what the API says, readable as it is from supabase-js.
  rating        text not null check (rating in ('up', 'down')),
  comment       text check (char_length(comment) between 1 and 2000),
  letta_step_id text,
  letta_sent_at timestamptz,
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now()
);

-- The RLS filter on user_id (a user's feedback, newest first).
create index message_feedback_user_id_updated_at_idx on public.message_feedback (user_id, updated_at desc);

-- updated_at is when the user last changed it (recording the send to Letta is not a change).
create trigger message_feedback_set_updated_at
  before update on public.message_feedback
  for each row when (old.rating is distinct from new.rating or old.comment is distinct from new.comment)
  execute function private.set_updated_at();

alter table public.message_feedback enable row level security;
alter table public.message_feedback force row level security;

-- Owners read their own feedback (supabase-js); only the service writes.
revoke all on public.message_feedback from anon;
revoke insert, update, delete, truncate, references, trigger on public.message_feedback from authenticated;
grant select on public.message_feedback to authenticated;

create policy message_feedback_select_own on public.message_feedback
  for select to authenticated
  using ((select auth.uid()) = user_id);
