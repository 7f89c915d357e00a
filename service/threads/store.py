"""Every SQL statement of the threads: the list, one thread, rename, delete, fork, titles."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from service.db import Database

# The columns a thread is shown with (the Letta ids and a branch's transcript stay inside).
THREAD_COLUMNS = (
    "id, title, title_source, is_default, forked_from_thread_id, forked_from_message_id, created_at, last_message_at"
)

CREATE = f"""
    insert into public.threads (user_id, title, title_source)
    values ($1, $2::text, case when $2::text is null then null else 'user' end)
    returning {THREAD_COLUMNS}
"""  # noqa: S608 - composed from constants only

ONE = f"select {THREAD_COLUMNS} from public.threads where id = $1 and user_id = $2"  # noqa: S608

RENAME = f"""
    update public.threads set title = $3, title_source = 'user' where id = $1 and user_id = $2
    returning {THREAD_COLUMNS}
"""  # noqa: S608

# What deleting a thread needs: its Letta side, and whether a turn runs in it now.
FOR_DELETE = """
    select t.is_default, t.letta_agent_id, t.letta_conversation_id, p.letta_agent_id as agent_id,
        exists (select 1 from public.messages m where m.thread_id = t.id and m.status = 'pending') as busy
    from public.threads t join public.user_profiles p on p.id = t.user_id
    where t.id = $1 and t.user_id = $2
"""

# A thread goes with its messages (cascade), unless a turn started in it meanwhile. The default thread is emptied
# instead: it stays the place for messages without a thread.
DELETE = """
    with gone as (
        delete from public.threads t where t.id = $1 and t.user_id = $2 and not t.is_default
          and not exists (select 1 from public.messages m where m.thread_id = t.id and m.status = 'pending')
        returning id
    ),
    emptied as (
        delete from public.messages m using public.threads t
        where t.id = $1 and t.user_id = $2 and t.is_default and m.thread_id = t.id
          and not exists (select 1 from public.messages p where p.thread_id = t.id and p.status = 'pending')
        returning m.id
    ),
    reset as (
        update public.threads t set title = null, title_source = null, last_message_at = now()
        where t.id = $1 and t.user_id = $2 and t.is_default
          and not exists (select 1 from public.messages p where p.thread_id = t.id and p.status = 'pending')
        returning id
    )
    select exists (select 1 from gone) or exists (select 1 from reset) as deleted
"""

# After its conversation was deleted in Letta, a thread that could not go (a turn started) opens a new one.
FORGET_CONVERSATION = """
    update public.threads set letta_agent_id = null, letta_conversation_id = null, compiled_memory_version = null
    where id = $1
"""

# A branch point: the message, its thread's Letta side, the agent's memory version (read before a fork compiles the
# branch's conversation), and whether anything in the thread comes after it.
BRANCH_POINT = """
    select m.created_at, m.status, t.title, t.title_source, t.letta_agent_id, t.letta_conversation_id,
        t.is_default, p.letta_agent_id as agent_id, p.memory_version,
        not exists (select 1 from public.messages later where later.thread_id = t.id
                    and (later.created_at, later.id) > (m.created_at, m.id)) as newest
    from public.messages m
    join public.threads t on t.id = m.thread_id
    join public.user_profiles p on p.id = t.user_id
    where m.id = $3 and m.thread_id = $1 and t.user_id = $2
"""

# The branch and its copy of the history up to the branch point (settled messages only; each turn gets a new
# id, so a copy is never taken for the turn it was copied from; tokens and cost stay with the original). $9: the
# memory version the forked conversation was compiled at (null without one).
FORK = f"""
    with branch as (
        insert into public.threads (user_id, title, title_source, letta_agent_id, letta_conversation_id,
            forked_from_thread_id, forked_from_message_id, branch_context, compiled_memory_version)
        values ($2, $4, $5, $6, $7, $1, $3, $8, $9)
        returning *
    ),
    point as (select created_at, id from public.messages where id = $3),
    copied as (
        select m.* from public.messages m, point
        where m.thread_id = $1 and m.user_id = $2 and (m.created_at, m.id) <= (point.created_at, point.id)
          and m.status <> 'pending'
    ),
    turns as (select turn_id, gen_random_uuid() as new_turn_id from copied group by turn_id),
    copies as (
        insert into public.messages (user_id, thread_id, turn_id, role, content, status, error_code, model,
            created_at)
        select c.user_id, branch.id, turns.new_turn_id, c.role, c.content, c.status, c.error_code, c.model,
            c.created_at
        from copied c join turns using (turn_id), branch
    )
    select {THREAD_COLUMNS} from branch
"""  # noqa: S608

# The transcript a branch taken before its source's newest message gives the agent: the copied messages, newest
# last, as much as fits. Owned through the thread and bounded by the point's position, so that it reads the
# thread's index from the point on alone (a filter on messages.user_id made the planner AND in the user's index:
# 20-80 ms for a heavy user's thread instead of 0.4 ms, bench/threads.py).
BRANCH_TRANSCRIPT = """
    select role, content from (
        select m.role, m.content, m.created_at, m.id from public.messages m
        where m.thread_id = $1 and m.status = 'complete'
          and exists (select from public.threads t where t.id = $1 and t.user_id = $2)
          and (m.created_at, m.id) <= ((select p.created_at from public.messages p where p.id = $3), $3)
        order by m.created_at desc, m.id desc limit $4
    ) recent order by created_at, id
"""

# A generated (or fallback) title, unless the user named the thread meanwhile.
SET_TITLE = """
    update public.threads set title = $2, title_source = $3
    where id = $1 and (title_source is null or title_source <> 'user')
"""


async def threads_page(
    db: Database, user_id: uuid.UUID, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[asyncpg.Record]:
    """Up to ``limit`` of the user's threads, most recent activity first, past the keyset position ``after``."""
    condition, args = ("and (last_message_at, id) < ($3, $4)", [*after]) if after else ("", [])
    return await db.fetch(
        f"select {THREAD_COLUMNS} from public.threads where user_id = $1 {condition} "  # noqa: S608
        "order by last_message_at desc, id desc limit $2",
        user_id,
        limit,
        *args,
    )
