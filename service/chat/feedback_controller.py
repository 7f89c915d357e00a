"""``/api/v1/chat/messages/{id}/feedback``: thumbs up or down, with an optional comment, on an assistant's reply."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, delete, put
from litestar.di import NamedDependency
from litestar.params import FromPath

from service.auth.dependencies import require_user
from service.auth.tokens import Principal
from service.chat.feedback import FeedbackService
from service.chat.schemas import FEEDBACK_COMMENT_MAX_CHARS, FeedbackIn, MessageFeedback
from service.errors import DomainError
from service.web.examples import FEEDBACK_EXAMPLE
from service.web.openapi import body_example, documented, ok

NOT_YOURS = documented(DomainError("no_such_message", "no such message"), "Not one of your messages")
NOT_RATEABLE = documented(
    DomainError("message_not_rateable", "only the assistant's replies take feedback"),
    "Your own message, or a reply still being written",
)
# A comment of FEEDBACK_COMMENT_MAX_CHARS characters, each escaped as \uXXXX in the worst case, and the rest.
FEEDBACK_MAX_BODY_BYTES = FEEDBACK_COMMENT_MAX_CHARS * 12 + 1024


class FeedbackController(Controller):
    path = "/api/v1/chat/messages"
    tags = ["chat"]

    @put(
        "/{message_id:uuid}/feedback",
        summary="Rate a reply of the assistant: thumbs up or down, with an optional comment (again: replaces it)",
        description=(
            f"`rating` is `up` or `down`; `comment` is at most {FEEDBACK_COMMENT_MAX_CHARS} characters. The rating "
            "also goes to the Letta step that wrote the reply (after the request: best effort)."
        ),
        request_max_body_size=FEEDBACK_MAX_BODY_BYTES,
        responses={
            200: ok(MessageFeedback, "The stored feedback", FEEDBACK_EXAMPLE),
            404: NOT_YOURS,
            422: NOT_RATEABLE,
        },
    )
    async def put_feedback(
        self,
        request: Request[Principal, Any, Any],
        feedback: NamedDependency[FeedbackService],
        message_id: FromPath[uuid.UUID],
        data: Annotated[
            FeedbackIn, body_example("Thumbs down", {"rating": "down", "comment": "It forgot my cat's name."})
        ],
    ) -> MessageFeedback:
        return await feedback.put(require_user(request.user), message_id, data)

    @delete(
        "/{message_id:uuid}/feedback",
        summary="Remove your feedback on a reply (also from Letta's step)",
        responses={404: NOT_YOURS, 422: NOT_RATEABLE},
    )
    async def delete_feedback(
        self,
        request: Request[Principal, Any, Any],
        feedback: NamedDependency[FeedbackService],
        message_id: FromPath[uuid.UUID],
    ) -> None:
        await feedback.delete(require_user(request.user), message_id)
