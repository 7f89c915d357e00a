"""One error type for every upstream (Letta, LiteLLM, Supabase Auth), with one rule for what is transient."""

from __future__ import annotations

import httpx


def transient_status(status: int) -> bool:
    """The one rule: an upstream's 5xx, 408 and 429 may pass if retried; any other 4xx will not."""
    return status >= 500 or status in (408, 429)


class UpstreamError(Exception):
    """A call to an upstream failed. ``transient`` errors (timeouts, 5xx, refused connections) may be retried.

    The message holds the upstream's own words for the logs; users are told a sentence (``service.web``).
    """

    def __init__(
        self, service: str, message: str, *, status: int | None = None, transient: bool, timed_out: bool = False
    ) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status = status
        self.transient = transient
        # The request went out but no answer came in time: the upstream may still act on it.
        self.timed_out = timed_out

    @classmethod
    def from_status(cls, service: str, status: int, text: str) -> UpstreamError:
        """An HTTP error answer, classified by ``transient_status``."""
        return cls(service, f"HTTP {status}: {text}", status=status, transient=transient_status(status))

    @classmethod
    def from_response(cls, service: str, response: httpx.Response) -> UpstreamError:
        return cls.from_status(service, response.status_code, response.text[:500])

    @classmethod
    def from_transport(cls, service: str, exc: Exception, *, timed_out: bool = False) -> UpstreamError:
        """No answer at all (refused, reset, timed out): always transient."""
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        return cls(service, f"{type(exc).__name__}: {exc}{cause}", transient=True, timed_out=timed_out)
