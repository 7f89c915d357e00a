"""The LLM proxy's errors, and OpenAI's error shape, which its routes answer with.

An error on ``/api/v1/llm`` is the problem the rest of the API would answer (``service.web.problems``: the same
status, ``code``, sentence and ``Retry-After``), reshaped into the body OpenAI's SDKs parse::

    {"error": {"message": "<the problem's detail>", "type": "<by status>", "param": "<member or null>",
               "code": "<the problem's code>"}}

A failure after a stream started is the same object as an SSE event (``data: {"error": {...}}``), which OpenAI's
SDKs raise as ``APIError``. LiteLLM's own words never reach the client: they are logged.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

from service.errors import DomainError
from service.web.problems import ProblemError, exception_handlers, spec_of

logger = logging.getLogger("service.llm")

# OpenAI's error ``type`` for each status (OpenAI's SDKs choose their exception class by the status).
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
# The code of a problem raised without one of its own (the auth middleware's 401, Litestar's 404 and 405).
_CODE_BY_STATUS = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}

# The problem the rest of the API answers for an exception (status, code, detail, headers).
_render_problem = exception_handlers[Exception]


def error_type(status: int) -> str:
    return _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")


def openai_error(code: str, message: str, status: int, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def openai_error_of(error: DomainError) -> dict[str, Any]:
    """The OpenAI error body of a domain error: its code, and the sentence (or detail) of ``ERRORS``."""
    spec = spec_of(error.code)
    param = error.members.get("param")
    return openai_error(
        error.code, error.detail or spec.sentence, spec.status, param if isinstance(param, str) else None
    )


def sse_error(error: DomainError) -> bytes:
    """A failure after the stream started, as the SSE event OpenAI's SDKs raise."""
    return b"data: " + msgspec.json.encode(openai_error_of(error)) + b"\n\n"


def _as_domain_error(exc: Exception) -> Exception:
    """The proxy's own code for what Litestar refuses before the handler runs: a body over the route's limit, and a
    body that is not a JSON object (malformed, not UTF-8, nested too deeply, or another JSON type)."""
    if isinstance(exc, HTTPException) and not isinstance(exc, ProblemError):
        if exc.status_code == 413:
            return DomainError("llm_request_too_large")
        if exc.status_code == 400:
            return DomainError("llm_invalid_request", "the body must be a JSON object (a chat completion request)")
    return exc


def openai_error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Exception handler of the proxy's routes: the problem the API would answer, in OpenAI's error shape."""
    problem = _render_problem(request, _as_domain_error(exc))
    body: dict[str, Any] = problem.content
    status = problem.status_code or 500
    code = body.get("code") or _CODE_BY_STATUS.get(status) or ("internal" if status >= 500 else "llm_invalid_request")
    param = body.get("param")
    return Response(
        openai_error(code, body["detail"], status, param if isinstance(param, str) else None),
        status_code=status,
        headers=problem.headers,
        media_type=MediaType.JSON,
    )


def upstream_refusal(status: int, body: bytes) -> DomainError:
    """The error for LiteLLM's answer ``status`` (>= 400) to a call: over budget (LiteLLM's own check), rate
    limited, the request refused by the model (4xx: the client's to fix), or LiteLLM failing (ours)."""
    error_type_ = None
    try:
        decoded = msgspec.json.decode(body)
        error = decoded.get("error") if isinstance(decoded, dict) else None
        error_type_ = error.get("type") if isinstance(error, dict) else None
    except msgspec.DecodeError:
        pass
    if error_type_ == "budget_exceeded":
        return DomainError("budget_exceeded")
    if status == 429:
        return DomainError("rate_limited", "the language model is rate limited right now; retry shortly", retry_after=5)
    if status in (401, 403) or status == 408 or status >= 500:
        return DomainError("llm_error")  # our key or LiteLLM: nothing the client can change
    return DomainError("llm_rejected")
