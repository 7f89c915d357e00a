"""A proxy call's parts: the request as checked (``parse_request``), its record while it runs, and the relay
that hands a stream's events to a client that may go away."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import msgspec

from service.errors import DomainError
from service.llm.schemas import FORWARDED_FIELDS, UNSUPPORTED_FIELDS, ChatCompletionRequest
from service.settings import Settings

_MAX_DETAIL = 300
_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


@dataclass(frozen=True, slots=True)
class ProxyCall:
    """A checked request: the body LiteLLM gets, and what the proxy needs to know of it."""

    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool  # the client asked for the usage chunk (the service always asks LiteLLM for it)


def _invalid(detail: str, param: str | None = None) -> DomainError:
    return DomainError("llm_invalid_request", detail[:_MAX_DETAIL], param=param)


def parse_request(data: Mapping[str, Any], settings: Settings) -> ProxyCall:
    """Check a chat completion request as OpenAI's API does, then against the deployer's bounds.

    Raises ``llm_invalid_request`` (400, with ``param``) or ``model_not_allowed`` (403)."""
    for name in sorted(data):
        if name in UNSUPPORTED_FIELDS:
            raise _invalid(f"{name} is not supported by this endpoint", name)
        if name not in FORWARDED_FIELDS:
            raise _invalid(f"Unrecognized request argument supplied: {name}", name)
    try:
        request = msgspec.convert(data, ChatCompletionRequest)
    except msgspec.ValidationError as exc:
        message = str(exc)
        at = _AT_PATH.search(message)
        raise _invalid(message, (at.group("path") or None) if at else None) from exc
    if request.model not in settings.llm_proxy_models:
        raise DomainError("model_not_allowed", param="model")
    if not request.messages:
        raise _invalid("messages must hold at least one message", "messages")
    if len(request.messages) > settings.llm_proxy_max_messages:
        raise _invalid(f"messages may hold at most {settings.llm_proxy_max_messages} messages", "messages")
    cap = settings.llm_proxy_max_tokens
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(request, name)
        if value is not None and value > cap:
            raise _invalid(f"{name} may be at most {cap}", name)
    if request.n not in (None, 1):
        raise _invalid("n must be 1: a call answers with one choice", "n")
    stream = bool(request.stream)
    if request.stream_options is not None and not stream:
        raise _invalid("stream_options is only allowed when stream is true", "stream_options")
    body = dict(data)
    if request.max_tokens is None and request.max_completion_tokens is None:
        body["max_tokens"] = cap  # every call's output is bounded
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    if stream:
        # Always asked for: the usage chunk carries the call's tokens and LiteLLM's cost.
        body["stream_options"] = {**(data.get("stream_options") or {}), "include_usage": True}
    return ProxyCall(body=body, model=request.model, stream=stream, include_usage=include_usage)


@dataclass(slots=True)
class CallRecord:
    """One call's row as it is completed: what LiteLLM answered, and whether the client stayed."""

    id: uuid.UUID
    user_id: uuid.UUID
    model: str
    status: str = "failed"
    error_code: str | None = None
    request_id: str | None = None  # the response's id: LiteLLM's spend record carries it as request_id
    litellm_call_id: str | None = None  # x-litellm-call-id: a record of a call that broke off carries this
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost: Decimal | None = None
    client_disconnected: bool = False

    def take_usage(self, usage: Mapping[str, Any]) -> None:
        self.prompt_tokens = _int(usage.get("prompt_tokens"))
        self.completion_tokens = _int(usage.get("completion_tokens"))
        self.total_tokens = _int(usage.get("total_tokens"))
        if self.total_tokens is None and self.prompt_tokens is not None and self.completion_tokens is not None:
            self.total_tokens = self.prompt_tokens + self.completion_tokens
        cost = decimal_of(usage.get("cost"))
        self.cost = cost if cost is not None else self.cost

    def fail(self, error: DomainError) -> DomainError:
        self.status, self.error_code = "failed", error.code
        return error


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def decimal_of(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() and number >= 0 else None


async def sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event of ``response`` (comments and other fields skipped)."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


class Relay:
    """The stream's events from the task that reads LiteLLM to the client's response, until the client leaves."""

    def __init__(self, record: CallRecord) -> None:
        self.record = record
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.listening = True

    def put(self, event: bytes) -> None:
        if self.listening:
            self.queue.put_nowait(event)

    def end(self) -> None:
        self.queue.put_nowait(None)

    async def events(self) -> AsyncGenerator[bytes, None]:
        finished = False
        try:
            while (event := await self.queue.get()) is not None:
                yield event
            finished = True
        finally:
            if not finished:  # the client went away: the reading goes on, nothing more is queued
                self.listening = False
                self.record.client_disconnected = True
