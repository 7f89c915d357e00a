-- Durable turns and exact cost.
--
-- A turn whose replica died, or whose outcome could not be stored, is finished by any replica from what
-- Letta kept (service/chat/recovery.py): its user message is found by the partial index on pending rows.
--
-- A turn's cost is first an estimate (Letta's token counts x LiteLLM's prices), then the sum of what
-- LiteLLM charged the user's key for every call the turn caused: the agent's steps, Letta's summarization,
-- cancelled and broken calls (service/billing/reconcile.py). The message that carries a turn's cost (its
-- reply, or the user's message when there is no reply) says whether that cost is final; other messages
-- have cost_final null.
alter table public.messages add column cost_final boolean;

create index messages_pending_idx on public.messages (created_at) where status = 'pending';
create index messages_cost_unsettled_idx on public.messages (user_id, created_at) where cost_final = false;

-- LiteLLM's per-request spend records, copied once each (request_id) and attributed to the turn that was
-- running when the call started (the user's latest turn started before it: one turn at a time per user).
create table private.llm_charges (
  request_id        text primary key,
  user_id           uuid not null references auth.users (id) on delete cascade,
  turn_id           uuid,
  spend             numeric(18, 10) not null,
  prompt_tokens     integer,
  completion_tokens integer,
  model             text,
  charged_at        timestamptz not null,
  recorded_at       timestamptz not null default now()
);

create index llm_charges_turn_id_idx on private.llm_charges (turn_id);
create index llm_charges_user_id_charged_at_idx on private.llm_charges (user_id, charged_at);

alter table private.llm_charges enable row level security;
alter table private.llm_charges force row level security;
revoke all on private.llm_charges from public, anon, authenticated;
