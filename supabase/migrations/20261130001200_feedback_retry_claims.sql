-- The retry of feedback Letta does not have yet (service/chat/feedback.py) claims one row at a time, so that one
-- replica sends it and the others skip it, and gives up after a bounded number of attempts.
--
-- letta_retry_at: when a retry may send the row next. A change of rating sets it one retry interval ahead (the
-- change's own sender has had that long) and letta_attempts back to 0; a claim counts the attempt and moves it
-- ahead by the interval times 2^(attempts before it), so a row that fails waits longer each time while others
-- get their turn; the last attempt, or a reply with no Letta run or step to send to, sets it to 'infinity': the
-- rating stays here only. Both columns describe the delivery, not the user's rating.
alter table public.message_feedback
  add column letta_attempts integer not null default 0 check (letta_attempts >= 0),
  add column letta_retry_at timestamptz not null default now();

-- Unsent rows in the order a retry claims them (replaces the index by message id: the retry no longer pages
-- through them in that order). A row leaves it once Letta has it; a given-up row sits at its end ('infinity').
drop index public.message_feedback_unsent_idx;
create index message_feedback_retry_idx on public.message_feedback (letta_retry_at) where letta_sent_at is null;
