-- The LLM proxy (POST /api/v1/llm/chat/completions, service/llm/): every call a user makes through it, with its
-- tokens and cost, billed to the user's own LiteLLM key.
--
-- A call's row is written when the call is sent ('pending') and completed when LiteLLM's answer has been read to
-- its end ('complete' or 'failed', even when the client went away mid-stream). Its cost is first LiteLLM's own
-- figure for the response (x-litellm-response-cost, or usage.cost in the last streamed chunk), else tokens x
-- prices; the cost reconciler (service/billing/reconcile.py) then matches LiteLLM's spend record to the call by
-- its request id (request_id: the response's id, which LiteLLM's spend record carries; litellm_call_id: what a
-- record of a call that broke off carries instead) and replaces the figure with the sum charged: cost_final.
-- The day's usage_metrics (tokens and total_cost; total_messages counts chat messages only) include the calls.
create table public.llm_calls (
  id                  uuid primary key default gen_random_uuid(),
  user_id             uuid not null references public.user_profiles (id) on delete cascade,
  model               text not null,
  stream              boolean not null,
  status              text not null default 'pending' check (status in ('pending', 'complete', 'failed')),
  error_code          text,
  request_id          text,
  litellm_call_id     text,
  prompt_tokens       integer,
  completion_tokens   integer,
  total_tokens        integer,
  cost                numeric(18, 10),
  cost_final          boolean not null default false,
  client_disconnected boolean not null default false,
  created_at          timestamptz not null default now(),
  finished_at         timestamptz
);

-- Also the index for the RLS filter on user_id (leading column).
create index llm_calls_user_id_created_at_idx on public.llm_calls (user_id, created_at desc);
-- The reconciler matches a spend record to its call by either id.
create index llm_calls_request_id_idx on public.llm_calls (request_id) where request_id is not null;
create index llm_calls_litellm_call_id_idx on public.llm_calls (litellm_call_id) where litellm_call_id is not null;
create index llm_calls_cost_unsettled_idx on public.llm_calls (user_id, created_at) where cost_final = false;

alter table public.llm_calls enable row level security;
alter table public.llm_calls force row level security;

-- Owners read their own calls (supabase-js); only the service writes.
revoke all on public.llm_calls from anon;
revoke insert, update, delete, truncate, references, trigger on public.llm_calls from authenticated;
grant select on public.llm_calls to authenticated;

create policy llm_calls_select_own on public.llm_calls
  for select to authenticated
  using ((select auth.uid()) = user_id);

-- A spend record of a proxy call belongs to that call, not to the chat turn running when it started.
alter table private.llm_charges
  add column llm_call_id uuid references public.llm_calls (id) on delete cascade;

create index llm_charges_llm_call_id_idx on private.llm_charges (llm_call_id) where llm_call_id is not null;
