"""Hand-written OpenAPI examples: what a frontend developer reads in ``/schema``.

Generated examples (random strings, out-of-range numbers) mislead; these show real shapes.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, OpenAPI, OpenAPIMediaType, OpenAPIResponse, Reference
from litestar.params import Body

from service.errors import DomainError, agent_not_ready
from service.rate_limit import RateDecision
from service.web.problems import PROBLEM_JSON, ProblemError


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details as ``service.web.problems`` renders them (documentation only)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    code: str | None = None
    reasons: list[str] | None = None
    errors: list[dict[str, Any]] | None = None
    # Extension members that some problems carry (each route's examples show which).
    spend: float | None = None
    max_budget: float | None = None
    budget_reset_at: str | None = None
    max_bytes: int | None = None
    bucket: str | None = None
    limit: int | None = None
    window_seconds: int | None = None
    retry_after: int | None = None
    agent_status: str | None = None
    turn_id: str | None = None
    label: str | None = None


def body_example(summary: str, value: Any) -> Any:
    return Body(examples=[Example(summary=summary, value=value)])


def ok(container: Any, summary: str, value: Any, description: str = "Success") -> ResponseSpec:
    return ResponseSpec(
        data_container=container,
        description=description,
        generate_examples=False,
        examples=[Example(summary=summary, value=value)],
    )


def _example(error: ProblemError | DomainError) -> Example:
    """The body a client gets for ``error`` (less the per-request ``instance`` and ``request_id``)."""
    if isinstance(error, DomainError):
        error = ProblemError.of(error)
    value = {"type": error.type_, "title": error.title, "status": error.status_code, "detail": error.detail}
    return Example(summary=error.title, value={**value, **error.members})


def documented(error: ProblemError | DomainError, description: str | None = None) -> ResponseSpec:
    """A response documented by an error the service really raises: the example is what a client gets."""
    example = _example(error)
    return ResponseSpec(
        data_container=Problem,
        description=description or example.summary or "",
        media_type=PROBLEM_JSON,
        generate_examples=False,
        examples=[example],
    )


def problem(status: int, detail: str, description: str | None = None, **members: Any) -> ResponseSpec:
    """A response documented by a plain problem (title = the HTTP phrase), for errors raised as such."""
    return documented(ProblemError(status, detail, **members), description)


def rate_limited(bucket: str, limit: int, window_seconds: int = 60) -> ResponseSpec:
    refused = RateDecision(False, bucket, limit, window_seconds, remaining=0, retry_after_seconds=3)
    return documented(refused.error(), "Per-user rate limit (Retry-After)")


def complete_schema(schema: OpenAPI) -> None:
    """Document what Litestar leaves out or gets wrong for this service: the 401 of every route that needs a
    token (routes that do not declare ``security=[{}]``), and its own 400 for a body or parameter that does not
    validate, which the service renders as problem details (with ``errors``) rather than plain JSON."""

    def problem_response(error: ProblemError, description: str) -> OpenAPIResponse:
        media = OpenAPIMediaType(
            schema=Reference(ref="#/components/schemas/Problem"), examples={error.title: _example(error)}
        )
        return OpenAPIResponse(description=description, content={PROBLEM_JSON: media})

    unauthorized = problem_response(
        ProblemError(401, "token has expired"), "Missing, malformed, expired or foreign access token"
    )
    invalid = ProblemError(
        400,
        "Validation failed for POST /api/v1/chat/message",
        errors=[{"message": "Object missing required field `content`", "key": "content", "source": "body"}],
    )
    for path, item in (schema.paths or {}).items():
        # The LLM proxy (/api/v1/llm) documents its own errors: OpenAI error objects, what OpenAI clients parse.
        openai_shaped = path.startswith("/api/v1/llm/")
        for operation in (item.get, item.post, item.put, item.patch, item.delete):
            if operation is None or operation.responses is None:
                continue
            responses = operation.responses
            if operation.security != [{}] and "401" not in responses:
                responses["401"] = unauthorized
            bad = responses.get("400")
            if (
                isinstance(bad, OpenAPIResponse)
                and bad.content
                and PROBLEM_JSON not in bad.content
                and not openai_shaped
            ):
                responses["400"] = problem_response(invalid, bad.description)


NOT_READY = documented(agent_not_ready(None), "Agent not provisioned yet (Retry-After); provisioning has been started")
