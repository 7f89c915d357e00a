"""Feedback on the assistant's replies: a thumbs up or down and an optional comment, one per reply, changeable.

It is stored under RLS (``public.message_feedback``) and shown with its message in the history and the export.
When the reply's Letta step is known (found from the reply's run) the rating also goes to Letta's step feedback,
after the request: ``letta_sent_at`` records that Letta has it. A send that failed (Letta down, the replica stopped)
is logged, the feedback stays stored, and every replica's retry loop sends it again later (``run``): each pass
claims such feedback one at a time (one replica sends it, the others skip it), up to ``RETRY_BATCH``, stopping at
the first sign that Letta is down and then waiting longer after each failed pass. Each feedback has
``RETRY_ATTEMPTS`` attempts, the wait before the next doubling from the retry interval (about 34 hours in all at
the default 60 s); then it is given up, logged, and kept here only.
A removal that did not reach Letta is not retried (there is no row left to say so). Letta keeps a rating only
(``positive`` / ``negative``, or none once removed): a step has no field for the comment, which stays here.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import asyncpg

from service.background import Detached, every
from service.chat import store
from service.chat.schemas import FeedbackIn, MessageFeedback
from service.clients.errors import UpstreamError
from service.clients.letta import LettaClient
from service.clients.retry import backoff_delay
from service.db import Database
from service.errors import DomainError
from service.observability.metrics import FEEDBACK_RETRIES

logger = logging.getLogger("service.chat")

LETTA_FEEDBACK = {"up": "positive", "down": "negative"}
# Sends to Letta for one change before giving up to the sender of a newer change (each change starts its own).
SEND_ROUNDS = 3
RETRY_BATCH = 20  # feedback sent again per pass of the retry loop, one after another
RETRY_ATTEMPTS = 12  # per feedback, the waits between them interval * 2^0 ... 2^10 (2047 intervals in all)
RETRY_BACKOFF_CAP_SECONDS = 600.0  # the longest wait between passes while Letta stays down


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
    def __init__(self, db: Database, letta: LettaClient, *, retry_interval_seconds: float = 60.0) -> None:
        self.db = db
        self.letta = letta
        self.retry_interval = retry_interval_seconds
        self._detached = Detached()
        self._failed_passes = 0  # in a row, on Letta being down
        self._resume_at = 0.0  # time.monotonic() before which the retry does not call Letta

    async def put(self, user_id: uuid.UUID, message_id: uuid.UUID, data: FeedbackIn) -> MessageFeedback:
        """Rate a reply (again: the new rating and comment replace the old)."""
        comment = data.comment if data.comment and data.comment.strip() else None
        row = _rateable(
            await self.db.fetchrow(store.PUT_FEEDBACK, message_id, user_id, data.rating, comment, self.retry_interval)
        )
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

    async def retry_unsent(self) -> int:
        """One pass of the retry loop: claim and send, one at a time, up to ``RETRY_BATCH`` feedback Letta does not
        have (``CLAIM_UNSENT_FEEDBACK``: the longest due first); returns how many Letta now has.

        A transient failure (Letta unreachable, timing out, 5xx) ends the pass and skips the next passes for a
        backoff that grows with each failed pass: a Letta that is down gets one call per wait, not a page per
        interval. Any other refusal (a step Letta no longer has) leaves that feedback to its next attempt. A
        feedback whose last attempt fails is given up (logged)."""
        if time.monotonic() < self._resume_at:
            return 0
        sent = 0
        for _ in range(RETRY_BATCH):
            row = await self.db.fetchrow(store.CLAIM_UNSENT_FEEDBACK, self.retry_interval, RETRY_ATTEMPTS)
            if row is None:
                break
            if row["nowhere"]:
                continue  # no Letta run or step for the reply: kept here only (its sender said so)
            message_id, attempt = row["message_id"], row["attempt"]
            delivered = False
            try:
                delivered = await self.send(message_id)
            except UpstreamError as exc:
                if exc.transient:
                    self._failed_passes += 1
                    wait = backoff_delay(self._failed_passes, self.retry_interval, RETRY_BACKOFF_CAP_SECONDS, floor=0.5)
                    self._resume_at = time.monotonic() + wait
                    logger.warning(
                        "feedback retry: Letta unavailable",
                        extra={"message_id": str(message_id), "error": str(exc), "retry_in_seconds": round(wait, 3)},
                    )
                    FEEDBACK_RETRIES.labels("unavailable").inc()
                    self._given_up_if_last(message_id, attempt)
                    return sent
                logger.warning("feedback not sent to Letta", extra={"message_id": str(message_id), "error": str(exc)})
            FEEDBACK_RETRIES.labels("sent" if delivered else "refused").inc()
            sent += delivered
            if not delivered:
                self._given_up_if_last(message_id, attempt)
        self._failed_passes = 0
        return sent

    @staticmethod
    def _given_up_if_last(message_id: uuid.UUID, attempt: int) -> None:
        if attempt >= RETRY_ATTEMPTS:
            FEEDBACK_RETRIES.labels("given_up").inc()
            logger.warning(
                "feedback given up: kept here, not in Letta", extra={"message_id": str(message_id), "attempts": attempt}
            )

    async def run(self, stop: asyncio.Event) -> None:
        """The retry loop every replica runs, a pass every ``retry_interval`` seconds."""
        await every(self.retry_interval, stop, self.retry_unsent, logger, "feedback retry")

    async def drain(self, grace_seconds: float = 10.0) -> None:
        await self._detached.drain(grace_seconds)
