"""RFC 9457 problem details for every error the service returns, and the one table of domain error codes.

``ERRORS`` maps each ``DomainError`` code to its HTTP status, title, user-facing sentence, ``Retry-After``
and WebSocket code: HTTP responses, WebSocket error frames, in-stream ``error`` events and the OpenAPI
examples are all made from it. Controllers may also raise ``ProblemError`` directly for input they refuse.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.enums import ScopeType
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap, Message, Scope

from service.db import DATABASE_UNAVAILABLE
from service.errors import DomainError
from service.web.request_context import ensure_request_id

logger = logging.getLogger("service.errors")

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    status: int
    title: str
    sentence: str
    retry_after: int | None = None
    ws_code: str | None = None  # the WebSocket error frame's code when it is not the domain code


_PHRASE = {status.value: status.phrase for status in HTTPStatus}

ERRORS: dict[str, ErrorSpec] = {
    # Authentication and admin access
    "admin_only": ErrorSpec(
        403,
        _PHRASE[403],
        "only an admin can do this: Authorization: Bearer <ADMIN_API_KEY>, or a user whose app_metadata.role is admin",
    ),
    "service_role_refused": ErrorSpec(
        403, _PHRASE[403], "the Supabase service role is not accepted here; admin routes take ADMIN_API_KEY"
    ),
    "jwks_unavailable": ErrorSpec(
        503, _PHRASE[503], "access tokens cannot be verified right now (signing keys unreachable); retry", 5
    ),
    # Accounts and profiles
    "account_deleted": ErrorSpec(401, "Account Deleted", "this account has been deleted; sign in again"),
    "account_banned": ErrorSpec(403, "Account Suspended", "this account is suspended"),
    "anonymous_not_allowed": ErrorSpec(
        403, _PHRASE[403], "anonymous accounts cannot use the assistant; sign up with an email address"
    ),
    "not_a_user": ErrorSpec(403, _PHRASE[403], "this route acts for a signed-in user; the service role has no agent"),
    "no_profile": ErrorSpec(404, _PHRASE[404], "no profile yet: it is being created", retry_after=5),
    "agent_not_ready": ErrorSpec(
        503, "Agent Not Ready", "your assistant is still being set up; retry shortly", 5, "agent_unavailable"
    ),
    # Chat turns (also the codes of in-stream `error` events)
    "invalid_message": ErrorSpec(422, _PHRASE[422], "the message is not valid"),
    "message_too_large": ErrorSpec(413, _PHRASE[413], "the message is too large"),
    "turn_in_progress": ErrorSpec(
        409,
        "Turn In Progress",
        "a reply is still being written; wait for it to finish, or stop it with POST /api/v1/chat/cancel "
        '(or {"type": "cancel"} over the WebSocket)',
    ),
    # Answered by the server itself (service/web/server.py), before the app sees a request.
    "bad_request": ErrorSpec(400, _PHRASE[400], "the request is not valid HTTP/1.1"),
    "request_timeout": ErrorSpec(408, _PHRASE[408], "the request head did not arrive in time"),
    "uri_too_long": ErrorSpec(414, _PHRASE[414], "the request target is too long"),
    "headers_too_large": ErrorSpec(431, _PHRASE[431], "the request head is too large"),
    "server_busy": ErrorSpec(
        503, _PHRASE[503], "the server has as many connections as it accepts; retry shortly", retry_after=5
    ),
    "too_many_sockets": ErrorSpec(429, _PHRASE[429], "too many chat sockets are open"),
    "cors_refused": ErrorSpec(
        400, _PHRASE[400], "this cross-origin request is not allowed (origin, method or headers)"
    ),
    "invalid_cursor": ErrorSpec(400, _PHRASE[400], "before is not a cursor returned by this endpoint"),
    # Message search (GET /api/v1/chat/search); the detail says which rule the query broke.
    "invalid_search_query": ErrorSpec(
        422, _PHRASE[422], "the search query needs a word to look for and at most 200 characters"
    ),
    "search_too_broad": ErrorSpec(
        422,
        _PHRASE[422],
        "the search matches too many of your messages to rank in time; add words, or search one thread",
    ),
    "reset_in_progress": ErrorSpec(409, "Reset In Progress", "your assistant is being reset; retry in a moment"),
    "no_such_turn": ErrorSpec(404, _PHRASE[404], "no such turn"),
    "turn_expired": ErrorSpec(410, _PHRASE[410], "this turn's stream is no longer kept; read it in the history"),
    "no_turn": ErrorSpec(404, _PHRASE[404], "no reply is being written right now"),
    # Threads
    "no_such_thread": ErrorSpec(404, _PHRASE[404], "no such thread"),
    "no_such_message": ErrorSpec(404, _PHRASE[404], "no such message in this thread"),
    "thread_busy": ErrorSpec(
        409, "Thread Busy", "a reply is being written in this thread; wait for it or stop it, then retry"
    ),
    "invalid_thread": ErrorSpec(422, _PHRASE[422], "the thread's fields are not valid"),
    # Feedback on replies (service/chat/feedback.py)
    "message_not_rateable": ErrorSpec(422, _PHRASE[422], "only the assistant's finished replies take feedback"),
    "rate_limited": ErrorSpec(429, _PHRASE[429], "too many requests; retry later"),
    "budget_exceeded": ErrorSpec(402, "Budget Exceeded", "your budget is used up; the reply was stopped"),
    "agent_unavailable": ErrorSpec(
        503, "Agent Unavailable", "the assistant is unreachable right now; please retry", retry_after=5
    ),
    # Readiness (service/clients/letta_version.py): Letta runs a version this service was not tested with.
    "letta_version_untested": ErrorSpec(
        503,
        "Letta Version Untested",
        "the agent server runs a version this service was not tested with; chat is off until an operator runs a "
        "tested version or sets LETTA_ALLOW_UNTESTED_VERSION=true",
    ),
    "agent_timeout": ErrorSpec(
        504,
        "Agent Timeout",
        "the assistant did not start answering in time; the attempt was stopped and your message saved as failed, "
        "please retry",
    ),
    "llm_error": ErrorSpec(502, "LLM Error", "the language model failed to answer"),
    "agent_error": ErrorSpec(502, "Agent Error", "the assistant could not finish the reply"),
    "storage_failed": ErrorSpec(502, "Storage Failed", "the reply could not be saved"),
    "internal": ErrorSpec(500, _PHRASE[500], "an unexpected error occurred; please retry"),
    "database_unavailable": ErrorSpec(
        503, _PHRASE[503], "the service cannot reach its database right now; please retry", retry_after=5
    ),
    # Agent memory
    "memory_too_long": ErrorSpec(422, _PHRASE[422], "the memory block is longer than its limit"),
    # Agent export and rebuild (service/agents/export.py)
    "invalid_export": ErrorSpec(
        422, _PHRASE[422], "the body is not an agent export (format ai-chat-backend.agent-export, version 1)"
    ),
    "rebuild_refused": ErrorSpec(
        422,
        _PHRASE[422],
        "the agent server refused part of the export (e.g. a passage over its 8192-token limit); the agent was "
        "not changed",
    ),
    # Billing
    "billing_unavailable": ErrorSpec(
        503, "Billing Unavailable", "billing (LiteLLM) is unreachable right now", retry_after=10
    ),
    "billing_not_ready": ErrorSpec(503, _PHRASE[503], "your billing account is still being set up", retry_after=5),
    "budget_refused": ErrorSpec(
        422, _PHRASE[422], "LiteLLM refused the budget change; check max_budget and budget_duration"
    ),
    # The LLM proxy (/api/v1/llm), which answers these in OpenAI's error shape (service/llm/errors.py); it also
    # answers budget_exceeded, rate_limited, llm_error, billing_not_ready and the account codes.
    "llm_invalid_request": ErrorSpec(400, _PHRASE[400], "the request is not a valid chat completion request"),
    "llm_request_too_large": ErrorSpec(413, _PHRASE[413], "the request body is too large"),
    "model_not_allowed": ErrorSpec(
        403, _PHRASE[403], "this model is not available here; GET /api/v1/llm/models lists the models you may use"
    ),
    "llm_rejected": ErrorSpec(
        400, _PHRASE[400], "the language model refused the request; check its parameters and the model's limits"
    ),
    "llm_unavailable": ErrorSpec(
        503, _PHRASE[503], "the language model is unreachable right now; please retry", retry_after=5
    ),
    "llm_timeout": ErrorSpec(504, _PHRASE[504], "the language model did not answer in time; please retry"),
    # The auth pass-through (/api/v1/auth/register|login|refresh)
    "auth_passthrough_disabled": ErrorSpec(
        404, _PHRASE[404], "this service does not offer the auth pass-through; use Supabase Auth directly (supabase-js)"
    ),
    # Account deletion
    "deletion_not_configured": ErrorSpec(
        503, _PHRASE[503], "account deletion is not configured: set SUPABASE_SERVICE_KEY"
    ),
    "auth_unavailable": ErrorSpec(
        503,
        "Service Unavailable",
        "could not delete your login right now; nothing was deleted, retry shortly",
        retry_after=10,
    ),
}


def spec_of(code: str) -> ErrorSpec:
    """The table's entry for ``code`` (``internal`` for a code it does not know)."""
    return ERRORS.get(code) or ERRORS["internal"]


def sentence(code: str) -> str:
    return spec_of(code).sentence


class ProblemError(HTTPException):
    """An error the client can act on; rendered as problem details.

    ``extra`` becomes RFC 9457 extension members (e.g. ``spend`` and ``max_budget`` on a 402).
    """

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail=detail, status_code=status_code, headers=headers)
        self.title = title or HTTPStatus(status_code).phrase
        self.type_ = type_
        self.members = extra

    @classmethod
    def of(cls, error: DomainError) -> ProblemError:
        """The problem a domain error is answered with, from ``ERRORS``."""
        spec = spec_of(error.code)
        retry_after = error.retry_after if error.retry_after is not None else spec.retry_after
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        members = {"code": error.code, **error.members}
        if error.retry_after is not None:
            members["retry_after"] = error.retry_after
        return cls(spec.status, error.detail or spec.sentence, title=spec.title, headers=headers, **members)


# Problem extension members worth passing on in a WebSocket error frame.
_FRAME_MEMBERS = ("spend", "max_budget", "retry_after", "turn_id", "limit", "window_seconds")


# What the web edge answers as a domain error: the domain's own, and a database that cannot answer right now.
REFUSALS: tuple[type[BaseException], ...] = (DomainError, *DATABASE_UNAVAILABLE)


def as_domain_error(exc: BaseException) -> DomainError:
    """One of ``REFUSALS`` as the domain error it is answered with."""
    if isinstance(exc, DomainError):
        return exc
    logger.warning("database unavailable", extra={"error": repr(exc)})
    return DomainError("database_unavailable")


def error_frame(refusal: BaseException) -> dict[str, Any]:
    """A WebSocket ``error`` frame for one of ``REFUSALS``: its code, sentence and the HTTP status it has
    elsewhere."""
    error = as_domain_error(refusal)
    spec = spec_of(error.code)
    members = error.members if error.retry_after is None else {**error.members, "retry_after": error.retry_after}
    extra = {k: v for k, v in members.items() if k in _FRAME_MEMBERS}
    return {
        "type": "error",
        "code": spec.ws_code or error.code,
        "message": error.detail or spec.sentence,
        "status": spec.status,
        **extra,
    }


def problem_body(
    status: int, title: str, detail: str, instance: str | None, type_: str = "about:blank", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body["request_id"] = ensure_request_id()
    body.update(extra)
    return body


def _problem_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    headers: dict[str, str] = {}
    if isinstance(exc, REFUSALS):
        exc = ProblemError.of(as_domain_error(exc))
    if isinstance(exc, ProblemError):
        status, title, detail = exc.status_code, exc.title, exc.detail
        body = problem_body(status, title, detail, request.url.path, exc.type_, **exc.members)
        headers.update(exc.headers or {})
    elif isinstance(exc, ValidationException):
        status = exc.status_code
        detail = exc.detail if exc.detail != HTTPStatus(status).phrase else "the request is not valid"
        body = problem_body(status, HTTPStatus(status).phrase, detail, request.url.path)
        if isinstance(exc.extra, list) and exc.extra:
            body["errors"] = exc.extra
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        title = HTTPStatus(status).phrase
        # Litestar fills detail with the phrase when nothing specific was said.
        detail = exc.detail if exc.detail and exc.detail != title else _default_detail(status)
        body = problem_body(status, title, detail, request.url.path)
        headers.update(exc.headers or {})
    else:
        status = 500
        logger.exception("unhandled error", extra={"path": request.url.path})
        body = problem_body(status, "Internal Server Error", "an unexpected error occurred", request.url.path)
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _default_detail(status: int) -> str:
    return {
        401: "a valid Supabase access token is required",
        403: "you are not allowed to do this",
        404: "no such resource",
        405: "this method is not allowed on this resource",
    }.get(status, HTTPStatus(status).description or HTTPStatus(status).phrase)


exception_handlers: ExceptionHandlersMap = {Exception: _problem_response}


class ProblemRequest(Request[Any, Any, Any]):
    """Litestar's request, with the JSON body errors msgspec raises outside ``DecodeError`` (bytes that are not
    UTF-8, nesting deeper than its recursion limit) answered as 400 problems instead of 500s."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except UnicodeDecodeError as exc:
            raise ClientException(detail=f"the body is not valid UTF-8 (byte {exc.start})") from exc
        except RecursionError as exc:
            raise ClientException(detail="the JSON body is nested too deeply") from exc


__all__ = [
    "ERRORS",
    "PROBLEM_JSON",
    "ErrorSpec",
    "ProblemError",
    "ProblemRequest",
    "error_frame",
    "exception_handlers",
    "problem_body",
    "sentence",
]


async def cors_refusal_as_problem(message: Message, scope: Scope) -> None:
    """``before_send`` hook: Litestar's CORS middleware refuses a preflight with a ``text/plain`` 400 ("Disallowed
    CORS ..."), outside any handler; it becomes problem details like every other error."""
    if scope["type"] != ScopeType.HTTP or scope.get("method") != "OPTIONS":
        return
    state = scope.setdefault("state", {})
    if message["type"] == "http.response.start" and message["status"] == 400:
        headers = dict(message.get("headers", []))
        if not headers.get(b"content-type", b"").startswith(b"text/plain"):
            return
        spec = ERRORS["cors_refused"]
        body = json.dumps(problem_body(spec.status, spec.title, spec.sentence, scope.get("path"), code="cors_refused"))
        state["cors_problem"] = body.encode()
        kept = [(k, v) for k, v in message.get("headers", []) if k not in (b"content-type", b"content-length")]
        message["headers"] = [
            *kept,
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(state["cors_problem"])).encode()),
        ]
    elif message["type"] == "http.response.body" and "cors_problem" in state:
        message["body"] = state.pop("cors_problem")
        message["more_body"] = False
