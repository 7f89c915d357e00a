"""The LLM proxy: OpenAI-compatible chat completions for the frontend, billed to the caller's own LiteLLM key.

A call: the request checked (``parse_request``: OpenAI's types and ranges, an allowed model, our bounds) -> the
budget (402) -> one statement that records the rate-limit hit, reads the user's LiteLLM key and writes the call's
row (``pending``) -> LiteLLM's ``/v1/chat/completions`` with that key (never returned, never logged) -> LiteLLM's
answer passed through -> one statement that completes the row with tokens and cost and adds them to the day's
usage; the cached budget gets the cost at once.

The exchange with LiteLLM runs in a task of its own: a client that goes away, mid-stream or before a whole answer
came, changes nothing upstream. The answer is read to its end and recorded (``client_disconnected``), so the
charge LiteLLM makes is the one we record; the reconciler later replaces the recorded figure with that charge
(``service.billing.reconcile``, matched by LiteLLM's request id).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx
import msgspec

from service.background import Detached
from service.billing.budgets import Billing, ensure_within_budget
from service.clients.retry import backoff_delay
from service.db import DATABASE_UNAVAILABLE, Database
from service.errors import DomainError
from service.llm import store
from service.llm.calls import CallRecord, ProxyCall, Relay, decimal_of, parse_request, sse_data
from service.llm.errors import sse_error, upstream_refusal
from service.llm.schemas import Model, ModelList
from service.rate_limit import LLM_BUCKET, PostgresRateLimiter
from service.settings import Settings

logger = logging.getLogger("service.llm")

# A whole (not streamed) answer may take minutes for a long completion; a stream may pause between chunks.
COMPLETION_TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=30.0)
STREAM_TIMEOUT = httpx.Timeout(connect=5.0, read=120.0, write=30.0, pool=30.0)
MODELS_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
STORE_ATTEMPTS = 8  # ~10 s of backoff in all while the database is unreachable
_DONE = b"data: [DONE]\n\n"


class LLMProxy:
    def __init__(
        self,
        db: Database,
        http: httpx.AsyncClient,
        billing: Billing,
        rate_limiter: PostgresRateLimiter,
        settings: Settings,
    ) -> None:
        self.db = db
        self.http = http
        self.billing = billing
        self.rate_limiter = rate_limiter
        self.settings = settings
        self._completions_url = f"{settings.litellm_base_url}/v1/chat/completions"
        self._models_url = f"{settings.litellm_base_url}/v1/models"
        self._detached = Detached()

    def parse(self, data: Mapping[str, Any]) -> ProxyCall:
        return parse_request(data, self.settings)

    # -- calls ----------------------------------------------------------------------------------------------
    async def complete(self, user_id: uuid.UUID, call: ProxyCall) -> bytes:
        """A whole completion: LiteLLM's JSON answer, recorded before it is returned."""
        record, key = await self._begin(user_id, call)
        task = self._detached.spawn(self._complete(record, call, key))
        return await asyncio.shield(task)  # a client that leaves does not stop the call or its record

    async def stream(self, user_id: uuid.UUID, call: ProxyCall) -> AsyncGenerator[bytes, None]:
        """A streamed completion: LiteLLM's chunks as SSE events, then ``data: [DONE]`` once recorded. A failure
        before the stream starts is raised (an HTTP error); one after it is an ``error`` event."""
        record, key = await self._begin(user_id, call)
        response = await self._open_stream(record, call, key)
        relay = Relay(record)
        self._detached.spawn(self._pump(record, call, response, relay))
        return relay.events()

    async def models(self, user_id: uuid.UUID) -> ModelList:
        """The allowed models LiteLLM serves to the user's key, in the order of ``LLM_PROXY_MODELS``."""
        key = await self.db.fetchval(store.USER_KEY, user_id)
        if key is None:
            raise DomainError("billing_not_ready")
        try:
            response = await self.http.get(self._models_url, headers=_auth(key), timeout=MODELS_TIMEOUT)
        except httpx.HTTPError as exc:
            logger.warning("LiteLLM unreachable", extra={"error": repr(exc)})
            raise DomainError("llm_unavailable") from exc
        if response.status_code >= 400:
            logger.warning("LiteLLM refused the model list", extra={"status": response.status_code})
            raise DomainError("llm_error")
        try:
            listed = msgspec.json.decode(response.content).get("data") or []
            served = {entry["id"]: entry for entry in listed if isinstance(entry, dict) and "id" in entry}
        except (msgspec.DecodeError, AttributeError, TypeError) as exc:
            raise DomainError("llm_error") from exc
        models = []
        for name in self.settings.llm_proxy_models:
            entry = served.get(name)
            if entry is not None:
                created = entry.get("created")
                owned_by = entry.get("owned_by")
                models.append(
                    Model(
                        id=name,
                        object="model",
                        created=created if isinstance(created, int) else 0,
                        owned_by=owned_by if isinstance(owned_by, str) else "litellm",
                    )
                )
        return ModelList(object="list", data=models)

    async def drain(self, grace_seconds: float = 30.0) -> None:
        """At shutdown, let running calls finish and be recorded."""
        await self._detached.drain(grace_seconds)

    # -- one call -------------------------------------------------------------------------------------------
    async def _begin(self, user_id: uuid.UUID, call: ProxyCall) -> tuple[CallRecord, str]:
        await ensure_within_budget(self.billing, str(user_id))
        limit, window = self.rate_limiter.limit_of(LLM_BUCKET)
        call_id = uuid.uuid4()
        row = await self.db.fetchrow(
            store.BEGIN_CALL, user_id, LLM_BUCKET, limit, window, call_id, call.model, call.stream
        )
        assert row is not None
        decision = self.rate_limiter.decision(LLM_BUCKET, row)
        if not decision.allowed:
            raise decision.error()
        if row["litellm_key"] is None:
            raise DomainError("billing_not_ready")
        return CallRecord(id=call_id, user_id=user_id, model=call.model), row["litellm_key"]

    def _request_body(self, record: CallRecord, call: ProxyCall) -> bytes:
        # LiteLLM's end user is the caller, whatever the body said.
        return msgspec.json.encode({**call.body, "user": str(record.user_id)})

    async def _complete(self, record: CallRecord, call: ProxyCall, key: str) -> bytes:
        try:
            try:
                response = await self.http.post(
                    self._completions_url,
                    content=self._request_body(record, call),
                    headers=_auth(key),
                    timeout=COMPLETION_TIMEOUT,
                )
            except httpx.HTTPError as exc:
                raise record.fail(_transport_error(record, exc)) from exc
            record.litellm_call_id = response.headers.get("x-litellm-call-id")
            if response.status_code >= 400:
                raise record.fail(_refused(record, response.status_code, response.content))
            try:
                answer = msgspec.json.decode(response.content)
                if not isinstance(answer, dict):
                    raise TypeError("not an object")
            except (msgspec.DecodeError, TypeError) as exc:
                logger.warning("LiteLLM answered garbage", extra={"call_id": str(record.id)})
                raise record.fail(DomainError("llm_error")) from exc
            record.request_id = answer.get("id") if isinstance(answer.get("id"), str) else None
            if isinstance(answer.get("usage"), dict):
                record.take_usage(answer["usage"])
            header_cost = decimal_of(response.headers.get("x-litellm-response-cost"))
            record.cost = header_cost if header_cost is not None else record.cost
            record.status = "complete"
            return response.content
        finally:
            await self._finish(record)

    async def _open_stream(self, record: CallRecord, call: ProxyCall, key: str) -> httpx.Response:
        request = self.http.build_request(
            "POST",
            self._completions_url,
            content=self._request_body(record, call),
            headers=_auth(key),
            timeout=STREAM_TIMEOUT,
        )
        try:
            try:
                response = await self.http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise record.fail(_transport_error(record, exc)) from exc
            record.litellm_call_id = response.headers.get("x-litellm-call-id")
            if response.status_code >= 400:
                try:
                    body = await response.aread()
                except httpx.HTTPError:
                    body = b""
                finally:
                    await response.aclose()
                raise record.fail(_refused(record, response.status_code, body))
        except BaseException:
            await self._finish(record)
            raise
        return response

    async def _pump(self, record: CallRecord, call: ProxyCall, response: httpx.Response, relay: Relay) -> None:
        error: DomainError | None = DomainError("llm_error")  # until the stream ends well
        try:
            error = await self._read_stream(record, call, response, relay)
        finally:
            await response.aclose()
            if error is None:
                record.status = "complete"
            else:
                record.fail(error)
            await self._finish(record)
            relay.put(_DONE if error is None else sse_error(error))
            relay.end()

    async def _read_stream(
        self, record: CallRecord, call: ProxyCall, response: httpx.Response, relay: Relay
    ) -> DomainError | None:
        """Relay LiteLLM's chunks until ``[DONE]``; returns the error that ended the stream otherwise."""
        try:
            async for data in sse_data(response):
                if data == "[DONE]":
                    return None
                try:
                    chunk = msgspec.json.decode(data)
                except msgspec.DecodeError:
                    chunk = None
                if not isinstance(chunk, dict):
                    logger.warning("LiteLLM streamed garbage", extra={"call_id": str(record.id)})
                    return DomainError("llm_error")
                if "error" in chunk:
                    logger.warning("LiteLLM failed mid-stream", extra={"call_id": str(record.id), "error": data[:500]})
                    return upstream_refusal(500, data.encode())
                if record.request_id is None and isinstance(chunk.get("id"), str):
                    record.request_id = chunk["id"]
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    record.take_usage(usage)
                    if not chunk.get("choices") and not call.include_usage:
                        continue  # the usage chunk the client did not ask for
                relay.put(b"data: " + data.encode() + b"\n\n")
        except httpx.HTTPError as exc:
            return _transport_error(record, exc)
        logger.warning("LiteLLM's stream ended without [DONE]", extra={"call_id": str(record.id)})
        return DomainError("llm_error")

    async def _finish(self, record: CallRecord) -> None:
        """Complete the call's row (retried while the database is unreachable; never raises) and count its cost
        in the cached budget."""
        if record.cost is None and (record.prompt_tokens or record.completion_tokens):
            try:
                prices = await self.billing.prices(record.model)
                if prices is not None:
                    record.cost = prices.cost(record.prompt_tokens or 0, record.completion_tokens or 0)
            except Exception as exc:
                logger.warning("prices unavailable; reconciliation fills the cost in", extra={"error": repr(exc)})
        args = (
            record.id,
            record.status,
            record.error_code,
            record.request_id,
            record.litellm_call_id,
            record.prompt_tokens,
            record.completion_tokens,
            record.total_tokens,
            record.cost,
            record.client_disconnected,
        )
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                await self.db.fetchval(store.FINISH_CALL, *args)
                break
            except DATABASE_UNAVAILABLE as exc:
                if attempt == STORE_ATTEMPTS:
                    logger.error("an LLM call could not be recorded", extra={"call_id": str(record.id)})
                    return
                logger.warning("recording an LLM call failed; retrying", extra={"attempt": attempt, "error": repr(exc)})
                await asyncio.sleep(backoff_delay(attempt, 0.5, 2.0, floor=0.5))
        if record.cost:
            self.billing.add_spend(str(record.user_id), float(record.cost))


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _transport_error(record: CallRecord, exc: httpx.HTTPError) -> DomainError:
    """No (whole) answer from LiteLLM: unreachable (503, nothing was sent), too slow (504), or broken off (502)."""
    logger.warning("LiteLLM call failed", extra={"call_id": str(record.id), "error": repr(exc)})
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return DomainError("llm_unavailable")
    if isinstance(exc, httpx.TimeoutException):
        return DomainError("llm_timeout")
    return DomainError("llm_error")


def _refused(record: CallRecord, status: int, body: bytes) -> DomainError:
    logger.warning(
        "LiteLLM refused a call",
        extra={"call_id": str(record.id), "status": status, "error": body[:500].decode(errors="replace")},
    )
    return upstream_refusal(status, body)
