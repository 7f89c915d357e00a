"""The pass-through's documented error answers (its OpenAPI examples)."""

from __future__ import annotations

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example

from service.auth.passthrough.service import LOGIN_PER_EMAIL
from service.errors import DomainError
from service.rate_limit import RateDecision
from service.web.openapi import documented, problem

UNREACHABLE = "Supabase Auth is unreachable"
DISABLED = "auth_passthrough_disabled"


def problem_spec(description: str, status: int, code: str | None, detail: str) -> ResponseSpec:
    return problem(status, detail, description, **({"code": code} if code is not None else {}))


def _rate_limited() -> ResponseSpec:
    ours = documented(RateDecision(False, LOGIN_PER_EMAIL, 10, 3600, remaining=0, retry_after_seconds=360).error())
    theirs = problem(429, "Request rate limit reached", code="over_request_rate_limit")
    return ResponseSpec(
        data_container=ours.data_container,
        description=(
            "Our limit per client IP or per email (code rate_limited, with the bucket), or Supabase Auth's own "
            "(its code); Retry-After says when to retry"
        ),
        media_type=ours.media_type,
        generate_examples=False,
        examples=[
            Example(summary="This service's limit", value=(ours.examples or [])[0].value),
            Example(summary="Supabase Auth's limit", value=(theirs.examples or [])[0].value),
        ],
    )


COMMON_ERRORS: dict[int, ResponseSpec] = {
    404: documented(DomainError(DISABLED), "The pass-through is off (AUTH_PASSTHROUGH_ENABLED)"),
    429: _rate_limited(),
    502: problem_spec(
        "Supabase Auth answered with something unreadable or an unexpected status",
        502,
        None,
        "Supabase Auth answered the login with an unreadable response",
    ),
    503: problem_spec(
        "Supabase Auth is unreachable or failing, or it rejected this service's key", 503, None, UNREACHABLE
    ),
}
