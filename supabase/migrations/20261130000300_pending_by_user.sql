-- A user's pending message, found by user: a new turn waits while a turn whose replica died is still
-- pending (service/chat/store.py, BEGIN_TURN), so the recovery stores it first and Letta never runs two
-- turns of one agent at once. Only pending rows are indexed: a handful at any time.
create index messages_user_id_pending_idx on public.messages (user_id) where status = 'pending';
