"""RFC 9457 problem details for every error the service returns."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from service.request_context import ensure_request_id

logger = logging.getLogger("service.errors")

PROBLEM_JSON = "application/problem+json"


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


__all__ = ["PROBLEM_JSON", "ProblemError", "ProblemRequest", "exception_handlers", "problem_body"]
