"""A turn's events, numbered and kept in Postgres, so that any replica can replay and follow them.

The replica running a turn numbers its events (``id:`` on the wire) and sends them to its own client from
memory, as before: the journal is off the token path. The replica's writer writes every turn's new events
into ``private.turn_events`` in one statement every ``FLUSH_SECONDS`` (and at once before a turn's ``done``).
A client that lost its stream, or a second device, reads the events after the last id it saw, then follows
the journal (polling every ``FOLLOW_SECONDS``) until the turn's ``done``. When a replica dies mid-turn, the
recovery stores the turn from Letta's record and completes the journal from what it stored: the rest of the
reply as one ``delta``, then ``done``. So a resumed stream always ends, and its deltas always join to the stored reply.

Why Postgres rather than Redis or Letta's background runs (README, "Resumable streams"): Letta's background
mode delivers tokens in 0.5 s bursts (first token ~700 ms instead of ~230 ms), and Postgres is already the
one shared component; a resume is rare next to a turn, and a replica writes one batch per interval for all its
turns, not a statement per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from service.chat.events import Event
from service.db import Database
from service.errors import DomainError

logger = logging.getLogger("service.chat.journal")

FLUSH_SECONDS = 0.1
FOLLOW_SECONDS = 0.1
MAX_EVENTS = 20_000  # per turn: far above any reply (deltas of 1024-token steps); past it, not journaled
MAX_FOLLOW_SECONDS = 600.0  # a follower of a turn that never ends (its replica and recovery both gone)

Numbered = tuple[int, str, dict[str, Any]]

_APPEND = """
    insert into private.turn_events (turn_id, user_id, seq, name, data)
    select turn_id, user_id, seq, name, data::jsonb
    from unnest($1::uuid[], $2::uuid[], $3::integer[], $4::text[], $5::text[]) as e(turn_id, user_id, seq, name, data)
    on conflict (turn_id, seq) do nothing
"""
_AFTER = """
    select seq, name, data from private.turn_events where turn_id = $1 and seq > $2 order by seq limit 1000
"""
# The turn's owner and its state: whether its user message is still pending, whether it has a journal.
_TURN = """
    select m.user_id, m.status, m.created_at,
        exists (select 1 from private.turn_events e where e.turn_id = $1) as journaled
    from public.messages m where m.turn_id = $1 and m.role = 'user'
"""
# The user's turn that has not ended: its message is still pending (running, or being recovered).
_RUNNING = """
    select turn_id from public.messages
    where user_id = $1 and status = 'pending' and ($2::uuid is null or thread_id = $2)
    order by created_at desc limit 1
"""
_DELETE_OLD = """
    delete from private.turn_events where ctid = any (array(
        select ctid from private.turn_events where created_at < now() - make_interval(secs => $1) limit $2
    ))
"""


class JournalWriter:
    """The events of every turn running in this replica, written in one statement every ``FLUSH_SECONDS``
    (not a task or a statement per turn: the cost stays flat however many streams are open)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[tuple[uuid.UUID, uuid.UUID, int, str, str]] = []
        self._lock = asyncio.Lock()  # one batch at a time, in order

    def add(self, turn_id: uuid.UUID, user_id: uuid.UUID, event: Numbered) -> None:
        seq, name, data = event
        if seq <= MAX_EVENTS:
            self._pending.append((turn_id, user_id, seq, name, json.dumps(data)))

    async def flush(self) -> None:
        """Write every event queued so far, now."""
        async with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                await self.db.execute(_APPEND, *(list(column) for column in zip(*batch, strict=True)))
            except Exception as exc:  # a follower then completes from the stored turn; live streams are unharmed
                logger.warning("journal write failed", extra={"events": len(batch), "error": repr(exc)})

    async def run(self, stop: asyncio.Event) -> None:
        """The replica's writer loop, until ``stop``; what is queued then is written too."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=FLUSH_SECONDS)
            # Shielded: a shutdown cancels the wait, never a batch half-written.
            await asyncio.shield(self.flush())
        await self.flush()


async def check_resumable(db: Database, user_id: uuid.UUID, turn_id: uuid.UUID) -> None:
    """``no_such_turn`` for a turn that is not the user's (another user's is as unknown as a made-up one);
    ``turn_expired`` when its events are no longer kept (or it never streamed): the history has it."""
    row = await db.fetchrow(_TURN, turn_id)
    if row is None or row["user_id"] != user_id:
        raise DomainError("no_such_turn")
    if not row["journaled"] and row["status"] != "pending":
        raise DomainError("turn_expired")


async def running_turn(db: Database, user_id: uuid.UUID, thread_id: uuid.UUID | None = None) -> uuid.UUID | None:
    """The user's running turn (in ``thread_id`` only, when given)."""
    turn_id: uuid.UUID | None = await db.fetchval(_RUNNING, user_id, thread_id)
    return turn_id


async def follow(db: Database, turn_id: uuid.UUID, after: int) -> AsyncIterator[Numbered]:
    """The turn's events after ``after``, then those still to come, until its ``done``."""
    deadline = time.monotonic() + MAX_FOLLOW_SECONDS
    while time.monotonic() < deadline:
        rows = await db.fetch(_AFTER, turn_id, after)
        for row in rows:
            after = row["seq"]
            data = row["data"] if isinstance(row["data"], dict) else json.loads(row["data"])
            yield after, row["name"], data
            if row["name"] == "done":
                return
        if not rows:
            await asyncio.sleep(FOLLOW_SECONDS)


async def complete(db: Database, turn_id: uuid.UUID, user_id: uuid.UUID, done: Event, error: Event | None) -> None:
    """After a recovery stored a turn: the journal gets the rest of the stored reply as one ``delta`` (what the
    dead replica had streamed is a prefix of it), the ``error`` if any, and ``done``. No-op without a journal
    (the turn never streamed) or when it already ends."""
    rows = await db.fetch("select seq, name, data from private.turn_events where turn_id = $1 order by seq", turn_id)
    if not rows or rows[-1]["name"] == "done":
        return
    streamed = "".join(_data(row)["text"] for row in rows if row["name"] == "delta")
    reply = await db.fetchval("select content from public.messages where turn_id = $1 and role = 'assistant'", turn_id)
    events: list[Event] = []
    if reply and reply.startswith(streamed) and len(reply) > len(streamed):
        events.append(("delta", {"text": reply[len(streamed) :]}))
    if error is not None:
        events.append(error)
    events.append(done)
    seq = rows[-1]["seq"]
    await db.execute(
        _APPEND,
        [turn_id] * len(events),
        [user_id] * len(events),
        list(range(seq + 1, seq + 1 + len(events))),
        [name for name, _ in events],
        [json.dumps(data) for _, data in events],
    )


async def delete_old(db: Database, keep_seconds: float, batch: int = 5000) -> None:
    await db.execute(_DELETE_OLD, keep_seconds, batch)


def _data(row: Any) -> dict[str, Any]:
    data = row["data"]
    return data if isinstance(data, dict) else dict(json.loads(data))
