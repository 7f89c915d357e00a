"""Request ids and structured JSON logs.

A request id is taken from ``X-Request-ID`` when the caller sends a sane one (so a frontend or proxy can
correlate), otherwise generated; it is echoed in the response, in problem details and in every log line
written while the request runs.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
access_logger = logging.getLogger("service.access")


def current_request_id() -> str | None:
    return _request_id.get()


def ensure_request_id() -> str:
    """The current id, minting one for requests no middleware saw (e.g. Litestar's own 404/405)."""
    request_id = _request_id.get()
    if request_id is None:
        request_id = uuid.uuid4().hex
        _request_id.set(request_id)
    return request_id


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log shippers (and Supabase's log drains) parse without configuration."""

    _STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: binds the request id and writes one access-log line per HTTP request.

    The id is not reset afterwards: uvicorn runs every request in its own task (own context), and the
    exception handler that renders errors raised in later middleware runs after this one returns.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in (ScopeType.HTTP, ScopeType.WEBSOCKET):
            await app(scope, receive, send)
            return
        supplied = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        _request_id.set(supplied if _VALID_REQUEST_ID.match(supplied) else uuid.uuid4().hex)
        started = time.perf_counter()
        status = 0

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_recording_status)
        except Exception as exc:
            # Raised before a response (e.g. the auth middleware's 401): Litestar renders it after we return.
            status = status or getattr(exc, "status_code", 500)
            raise
        finally:
            if scope["type"] == ScopeType.HTTP:
                access_logger.info(
                    "request",
                    extra={
                        "method": scope.get("method"),
                        "path": scope["path"],
                        "status": status or 500,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )

    return middleware


async def add_request_id_header(message: Message, scope: Scope) -> None:
    """``before_send`` hook: Litestar runs it for every response, including rendered errors."""
    request_id = current_request_id()
    if message["type"] == "http.response.start" and request_id:
        message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
