-- Feedback Letta does not have yet (letta_sent_at null: its send failed, or its replica stopped first) is sent again
-- by every replica's retry loop (service/chat/feedback.py), a page at a time in message_id order. This partial index
-- holds only those rows, so a pass reads what it sends, not the whole table: a row leaves it once Letta has it.
create index message_feedback_unsent_idx on public.message_feedback (message_id) where letta_sent_at is null;
