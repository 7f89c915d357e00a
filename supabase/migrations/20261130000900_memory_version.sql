-- A thread's Letta conversation renders the agent's memory blocks into its system message when it is compiled
-- (created, forked or recompiled), and Letta does not recompile it after a memory edit (ARCHITECTURE.md §7). The
-- service recompiled every thread's conversation before each turn (~40 ms before the first token); with these two
-- numbers it does so only when the memory may have changed since that conversation was compiled.
--
-- memory_version: bumped by the service whenever the user's agent's memory blocks may have changed (a turn that
-- called a tool which can edit them, a turn that did not end cleanly or was recovered from Letta's record, an edit
-- through PATCH /api/v1/agent/memory). An agent reset or rebuild needs no bump: the new agent's conversations are
-- new, compiled from its memory as it is then.
alter table public.user_profiles add column memory_version bigint not null default 0;

-- compiled_memory_version: the memory_version read before the thread's conversation was last compiled (so a bump
-- made meanwhile leaves it behind, and the next turn recompiles); null: not known (threads made before this
-- migration, a thread without a conversation), recompiled at the next turn. Meaningless without
-- letta_conversation_id; the default thread (the agent's own history) never uses it: Letta recompiles that one.
alter table public.threads add column compiled_memory_version bigint;

-- Existing rows: every profile starts at 0 and every thread at null, so each existing thread's conversation is
-- recompiled once, at its next turn. memory_version is readable by the profile's owner like the rest of the profile
-- (a count, nothing secret); compiled_memory_version stays inside like the Letta ids: the threads' column grants to
-- authenticated name the columns the frontend reads, and it is not one of them.
