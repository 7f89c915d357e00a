"""The chat domain's errors (their HTTP and WebSocket shapes are in ``service.web.problems.ERRORS``)."""

from __future__ import annotations

import uuid

from service.errors import DomainError


def turn_in_progress(thread_id: uuid.UUID | None = None) -> DomainError:
    """The user's one turn at a time (across all threads) is running; ``thread_id`` says where."""
    return DomainError("turn_in_progress", thread_id=str(thread_id)) if thread_id else DomainError("turn_in_progress")


def no_such_thread() -> DomainError:
    return DomainError("no_such_thread")


def no_turn() -> DomainError:
    return DomainError("no_turn")


def agent_unavailable(turn_id: uuid.UUID) -> DomainError:
    """Letta could not be reached before the reply started; the message is kept as failed."""
    return DomainError(
        "agent_unavailable",
        "the assistant is unreachable right now; your message was saved, please retry",
        turn_id=str(turn_id),
    )


def agent_timeout(turn_id: uuid.UUID) -> DomainError:
    """Letta took the message but did not start answering; its run was cancelled."""
    return DomainError("agent_timeout", turn_id=str(turn_id))


def turn_failed(code: str, turn_id: uuid.UUID) -> DomainError:
    """A turn that ended with an error event (for callers that wait for the whole reply)."""
    return DomainError(code, turn_id=str(turn_id))


def validate_content(content: str, max_bytes: int) -> str:
    """The one check for a user message, shared by SSE, JSON and WebSocket."""
    if not content.strip():
        raise DomainError("invalid_message", "content must not be empty")
    size = len(content.encode("utf-8"))
    if size > max_bytes:
        raise DomainError(
            "message_too_large", f"content is {size} bytes; the limit is {max_bytes}", max_bytes=max_bytes
        )
    if "\x00" in content:
        raise DomainError("invalid_message", "content must not contain NUL characters")
    return content
