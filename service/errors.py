"""Domain errors: what went wrong, named by a code, with no HTTP in sight.

Services raise ``DomainError``; the web edge (``service.web.problems``) looks the code up in its one table
to answer with an HTTP problem (status, title, sentence, ``Retry-After``) or a WebSocket error frame. The
``detail`` is a sentence for the user, never upstream text: that goes to the logs.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A failure the caller can act on. ``code`` names it in ``service.web.problems.ERRORS``; ``detail``
    replaces the table's sentence when it says something more specific; ``members`` become problem
    extension members (``spend``, ``turn_id``, ...); ``retry_after`` (seconds) overrides the table's."""

    def __init__(self, code: str, detail: str | None = None, *, retry_after: int | None = None, **members: Any):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.members = members


def account_deleted() -> DomainError:
    """The token is still valid, the account is gone."""
    return DomainError("account_deleted")


def not_a_user() -> DomainError:
    """A route that acts for a signed-in user, called with the service role."""
    return DomainError("not_a_user")


NOT_READY_RETRY_SECONDS = 5


def agent_not_ready(agent_status: str | None) -> DomainError:
    """The user's agent is not active yet (the caller has nudged provisioning)."""
    return DomainError(
        "agent_not_ready",
        agent_status=agent_status or "pending",
        retry_after=NOT_READY_RETRY_SECONDS,
    )
