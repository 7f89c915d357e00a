-- Raw upstream error text is for operators: it names internal hosts ("Cannot connect to host 10.0.3.7:8283")
-- and other users' ids in LiteLLM's wording. It moves out of the tables the frontend reads (supabase-js
-- under RLS) into private ones; users get a stable code (README, "Problem codes"), whose sentence the
-- service renders.

-- ===================================================================== messages
alter table public.messages add column error_code text;

create table private.message_errors (
  message_id  uuid primary key references public.messages (id) on delete cascade,
  detail      text not null,
  recorded_at timestamptz not null default now()
);

insert into private.message_errors (message_id, detail)
select id, error from public.messages where error is not null;
-- Rows written before codes existed: the generic code of a turn that could not finish.
update public.messages set error_code = 'agent_error' where error is not null;
alter table public.messages drop column error;

-- ===================================================================== user_profiles
create table private.provisioning_errors (
  user_id     uuid primary key references public.user_profiles (id) on delete cascade,
  detail      text not null,
  recorded_at timestamptz not null default now()
);

insert into private.provisioning_errors (user_id, detail)
select id, provisioning_error from public.user_profiles where provisioning_error is not null;
alter table public.user_profiles drop column provisioning_error;

alter table private.message_errors enable row level security;
alter table private.message_errors force row level security;
revoke all on private.message_errors from public, anon, authenticated;
alter table private.provisioning_errors enable row level security;
alter table private.provisioning_errors force row level security;
revoke all on private.provisioning_errors from public, anon, authenticated;
