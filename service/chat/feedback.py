"""Feedback on the assistant's replies: a thumbs up or down and an optional comment, one per reply, changeable.

It is stored under RLS (``public.message_feedback``) and shown with its message in the history and the export.
When the reply's Letta step is known (found from the reply's run) the rating also goes to Letta's step feedback,
after the request and best effort: a failure is logged and the feedback stays stored; ``letta_sent_at`` records
that Letta has it. Letta keeps a rating only (``positive`` / ``negative``, or none once removed): a step has no
field for the comment, which stays here.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg

from service.background import Detached
from service.chat import store
from service.chat.schemas import FeedbackIn, MessageFeedback
from service.clients.letta import LettaClient
from service.db import Database
from service.errors import DomainError

logger = logging.getLogger("service.chat")

LETTA_FEEDBACK = {"up": "positive", "down": "negative"}
# Sends to Letta for one change before giving up to the sender of a newer change (each change starts its own).
SEND_ROUNDS = 3


def _rateable(row: asyncpg.Record | None) -> asyncpg.Record:
    """The row of a message that takes feedback: only the caller's own assistant replies, once written."""
    if row is None:
        raise DomainError("no_such_message", "no such message")
    if row["role"] != "assistant":
        raise DomainError("message_not_rateable", "only the assistant's replies take feedback")
    if row["status"] == "pending":
        raise DomainError("message_not_rateable", "the reply is still being written")
    return row


class FeedbackService:
    def __init__(self, db: Database, letta: LettaClient) -> None:
        self.db = db
        self.letta = letta
        self._detached = Detached()

    async def put(self, user_id: uuid.UUID, message_id: uuid.UUID, data: FeedbackIn) -> MessageFeedback:
        """Rate a reply (again: the new rating and comment replace the old)."""
        comment = data.comment if data.comment and data.comment.strip() else None
        row = _rateable(await self.db.fetchrow(store.PUT_FEEDBACK, message_id, user_id, data.rating, comment))
        if row["unsent"]:
            self._send_later(message_id, None)
        return MessageFeedback.of(row)

    async def delete(self, user_id: uuid.UUID, message_id: uuid.UUID) -> None:
        """Remove a reply's feedback (none there: nothing to do)."""
        row = _rateable(await self.db.fetchrow(store.DELETE_FEEDBACK, message_id, user_id))
        if row["removed"]:
            self._send_later(message_id, row["letta_step_id"])

    async def send(self, message_id: uuid.UUID, step_id: str | None = None) -> bool:
        """Give Letta the reply's rating as it is now (none: clear Letta's); True once Letta has it.

        Two changes in a row send concurrently, maybe from two replicas, and Letta keeps whichever comes last: a
        sender records its send only if the rating is still the one it sent, and otherwise sends again."""
        for _ in range(SEND_ROUNDS):
            state = await self.db.fetchrow(store.FEEDBACK_STATE, message_id)
            if state is None:
                return False  # the message is gone (its thread or its account deleted)
            step_id = state["letta_step_id"] or step_id
            if step_id is None and state["letta_run_id"]:
                step_id = await self.letta.step_of_message(state["letta_run_id"], state["letta_message_id"])
            if step_id is None:
                logger.info(
                    "no Letta step for the reply: its feedback is kept here only", extra={"message_id": str(message_id)}
                )
                return False
            rating = state["rating"]
            await self.letta.set_step_feedback(step_id, LETTA_FEEDBACK[rating] if rating else None)
            if await self.db.fetchval(store.FEEDBACK_SENT, message_id, rating, step_id):
                return True
        return False

    def _send_later(self, message_id: uuid.UUID, step_id: str | None) -> None:
        self._detached.spawn(self._send_logged(message_id, step_id))

    async def _send_logged(self, message_id: uuid.UUID, step_id: str | None) -> None:
        try:
            await self.send(message_id, step_id)
        except Exception as exc:  # Letta or the database down, a step Letta lost: the feedback stays stored
            logger.warning("feedback not sent to Letta", extra={"message_id": str(message_id), "error": repr(exc)})

    async def drain(self, grace_seconds: float = 10.0) -> None:
        await self._detached.drain(grace_seconds)
