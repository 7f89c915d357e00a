"""Threads: many conversations of one user, each a window onto the user's one agent.

A thread's context lives in Letta (a conversation, or the agent's own history for the default thread), its
messages in Postgres. Creating and renaming touch Postgres only; the conversation is opened at the thread's first
turn (``service.chat.service``). Deleting removes the Letta side first, so a failure there leaves the thread whole
for a retry. Forking copies our history up to a message; Letta forks whole conversations only, so a branch taken
at the source's newest message forks the conversation, and an earlier one gives the agent the transcript with its
first turn (``branch_context``).
"""

from __future__ import annotations

import logging
import uuid

import asyncpg

from service.chat.errors import no_such_thread
from service.clients.errors import UpstreamError
from service.clients.letta import LettaClient
from service.db import Database
from service.errors import DomainError
from service.pagination import decode_cursor, encode_cursor
from service.threads import store
from service.threads.schemas import ForkIn, Thread, ThreadPage

logger = logging.getLogger("service.threads")

# A branch's transcript for the agent: the newest messages up to the branch point, as much as fits.
BRANCH_MESSAGES = 40
BRANCH_CONTEXT_CHARS = 16_000
BRANCH_PREAMBLE = (
    "[This conversation continues an earlier one. Its messages so far, oldest first, are below; the user's new "
    "message follows them.]"
)


class ThreadService:
    def __init__(self, db: Database, letta: LettaClient) -> None:
        self.db = db
        self.letta = letta

    async def list(self, user_id: uuid.UUID, limit: int, before: str | None) -> ThreadPage:
        after = decode_cursor(before) if before else None
        rows = await store.threads_page(self.db, user_id, limit + 1, after)
        threads = [Thread.of(row) for row in rows[:limit]]
        more = len(rows) > limit
        return ThreadPage(threads, encode_cursor(threads[-1].last_message_at, threads[-1].id) if more else None)

    async def create(self, user_id: uuid.UUID, title: str | None) -> Thread:
        try:
            row = await self.db.fetchrow(store.CREATE, user_id, title)
        except asyncpg.ForeignKeyViolationError as exc:
            raise DomainError("no_profile") from exc
        return Thread.of(row)

    async def get(self, user_id: uuid.UUID, thread_id: uuid.UUID) -> Thread:
        row = await self.db.fetchrow(store.ONE, thread_id, user_id)
        if row is None:
            raise no_such_thread()
        return Thread.of(row)

    async def rename(self, user_id: uuid.UUID, thread_id: uuid.UUID, title: str) -> Thread:
        row = await self.db.fetchrow(store.RENAME, thread_id, user_id, title)
        if row is None:
            raise no_such_thread()
        return Thread.of(row)

    async def delete(self, user_id: uuid.UUID, thread_id: uuid.UUID) -> None:
        """The thread and its messages go (the default thread is emptied, and stays); its Letta conversation is
        deleted (the default thread's: the agent's history is cleared; memory stays). 409 while a turn runs in it."""
        row = await self.db.fetchrow(store.FOR_DELETE, thread_id, user_id)
        if row is None:
            raise no_such_thread()
        if row["busy"]:
            raise DomainError("thread_busy")
        try:
            if row["is_default"]:
                if row["agent_id"]:
                    await self.letta.reset_history(row["agent_id"])
            elif row["letta_conversation_id"]:
                await self.letta.delete_conversation(row["letta_conversation_id"])
        except UpstreamError as exc:
            logger.warning("could not delete a thread's Letta side", extra={"error": str(exc)})
            raise DomainError("agent_unavailable") from exc
        if not await self.db.fetchval(store.DELETE, thread_id, user_id):
            # A turn started in it after the check: it stays, and opens a new conversation at its next turn.
            if not row["is_default"]:
                await self.db.execute(store.FORGET_CONVERSATION, thread_id)
            raise DomainError("thread_busy")

    async def fork(self, user_id: uuid.UUID, thread_id: uuid.UUID, data: ForkIn) -> Thread:
        """A new thread that starts with this thread's history up to and including ``data.message_id``."""
        point = await self.db.fetchrow(store.BRANCH_POINT, thread_id, user_id, data.message_id)
        if point is None:
            exists = await self.db.fetchval(store.ONE, thread_id, user_id)
            raise DomainError("no_such_message") if exists else no_such_thread()
        if point["status"] == "pending":
            raise DomainError("thread_busy", "the message's reply is still being written")
        agent_id, conversation_id, context = None, None, None
        current = point["agent_id"]
        on_current_agent = point["is_default"] or point["letta_agent_id"] == current
        if point["newest"] and current and on_current_agent:
            # The whole context is the branch's: Letta copies it, with the memory compiled afresh (at the version read
            # with the branch point, or later).
            try:
                source = None if point["is_default"] else point["letta_conversation_id"]
                if point["is_default"] or source:
                    conversation_id = await self.letta.fork_conversation(current, source)
                    agent_id = current
            except UpstreamError as exc:
                logger.warning("could not fork the Letta conversation", extra={"error": str(exc)})
                raise DomainError("agent_unavailable") from exc
        if conversation_id is None:
            context = await self._transcript(user_id, thread_id, data.message_id)
        title = data.title or point["title"]
        source_of_title = "user" if data.title else (point["title_source"] if point["title"] else None)
        row = await self.db.fetchrow(
            store.FORK,
            thread_id,
            user_id,
            data.message_id,
            title,
            source_of_title,
            agent_id,
            conversation_id,
            context,
            point["memory_version"] if conversation_id else None,
        )
        return Thread.of(row)

    async def _transcript(self, user_id: uuid.UUID, thread_id: uuid.UUID, message_id: uuid.UUID) -> str | None:
        rows = await self.db.fetch(store.BRANCH_TRANSCRIPT, thread_id, user_id, message_id, BRANCH_MESSAGES)
        lines: list[str] = []
        size = 0
        for row in reversed(rows):  # newest first: keep the end of the conversation when it does not all fit
            line = f"{'User' if row['role'] == 'user' else 'Assistant'}: {row['content']}"
            if size + len(line) > BRANCH_CONTEXT_CHARS:
                break
            lines.append(line)
            size += len(line) + 1
        if not lines:
            return None
        return "\n".join([BRANCH_PREAMBLE, *reversed(lines)])
