"""``/api/v1/llm``: OpenAI-compatible chat completions and model list, billed to the caller's own LiteLLM key.

A stock OpenAI client pointed at ``<service>/api/v1/llm`` with the user's Supabase access token as its API key works
unchanged. Every error on these routes is in OpenAI's error shape (``service.llm.errors``).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, MediaType, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.response import Stream

from service.auth.dependencies import provide_ready_profile
from service.errors import DomainError
from service.llm.errors import openai_error, openai_error_of, openai_error_response
from service.llm.schemas import ChatCompletion, ModelList, OpenAIError
from service.llm.service import LLMProxy
from service.users.profiles import ReadyProfile
from service.web.openapi import body_example, ok

MAX_BODY_BYTES = 1024 * 1024  # a long document to summarise fits; larger is 413 llm_request_too_large
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

REQUEST_EXAMPLE = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Give the conversation a title of at most five words."},
        {"role": "user", "content": "How do I keep basil alive on a windowsill?"},
    ],
    "max_tokens": 20,
}
COMPLETION_EXAMPLE = {
    "id": "chatcmpl-9b1f0c7e2a4d4f0e8c1b2a3d4e5f6a7b",
    "object": "chat.completion",
    "created": 1764324902,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Windowsill Basil Care"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 31, "completion_tokens": 5, "total_tokens": 36},
}


def _error(error: DomainError, description: str | None = None) -> ResponseSpec:
    body = openai_error_of(error)
    return ResponseSpec(
        data_container=OpenAIError,
        description=description or body["error"]["message"],
        media_type=MediaType.JSON,
        generate_examples=False,
        examples=[Example(summary=error.code, value=body)],
    )


UNAUTHORIZED = ResponseSpec(
    data_container=OpenAIError,
    description="Missing, malformed, expired or foreign access token",
    media_type=MediaType.JSON,
    generate_examples=False,
    examples=[Example(summary="unauthorized", value=openai_error("unauthorized", "token has expired", 401))],
)
NOT_READY = _error(DomainError("agent_not_ready"), "The user is not provisioned yet (Retry-After)")


class LLMController(Controller):
    path = "/api/v1/llm"
    tags = ["llm"]
    dependencies = {"profile": Provide(provide_ready_profile)}
    exception_handlers = {Exception: openai_error_response}

    @post(
        "/chat/completions",
        summary="OpenAI-compatible chat completion, billed to your own LiteLLM key",
        description=(
            "OpenAI's chat completion request and response, streamed with `stream: true` (SSE `data:` chunks, "
            "`stream_options.include_usage` for the usage chunk, then `data: [DONE]`). Only the models of "
            "`GET /api/v1/llm/models`; `max_tokens` (or `max_completion_tokens`) at most LLM_PROXY_MAX_TOKENS, which "
            "is also what a call that names none gets; at most LLM_PROXY_MAX_MESSAGES messages; `n` 1; `user` is set "
            "to your user id. Errors are OpenAI's error objects, with the service's codes; after a stream started, "
            'a failure is a `data: {"error": ...}` event. Every call is recorded in `llm_calls` and counted in '
            "`/api/v1/user/usage` and your budget."
        ),
        status_code=200,
        request_max_body_size=MAX_BODY_BYTES,
        responses={
            200: ok(ChatCompletion, "A completion", COMPLETION_EXAMPLE, "JSON, or with stream: true an SSE stream"),
            400: _error(DomainError("llm_invalid_request", "Unrecognized request argument supplied: foo", param="foo")),
            401: UNAUTHORIZED,
            402: _error(DomainError("budget_exceeded", "your budget is used up: spent 10.0012 of 10.0000")),
            403: _error(DomainError("model_not_allowed", param="model")),
            413: _error(DomainError("llm_request_too_large")),
            429: _error(DomainError("rate_limited", "rate limit for 'llm' reached (30 per 60 s); retry in 2 s")),
            502: _error(DomainError("llm_error")),
            503: NOT_READY,
            504: _error(DomainError("llm_timeout")),
        },
    )
    async def chat_completions(
        self,
        data: Annotated[dict[str, Any], body_example("A title for a conversation", REQUEST_EXAMPLE)],
        profile: NamedDependency[ReadyProfile],
        llm: NamedDependency[LLMProxy],
    ) -> Response[Any]:
        call = llm.parse(data)
        if call.stream:
            return Stream(await llm.stream(profile.id, call), media_type="text/event-stream", headers=SSE_HEADERS)
        return Response(await llm.complete(profile.id, call), media_type=MediaType.JSON)

    @get(
        "/models",
        summary="The models you may call (OpenAI's model list)",
        responses={
            200: ok(
                ModelList,
                "One model",
                {
                    "object": "list",
                    "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1677610602, "owned_by": "openai"}],
                },
            ),
            401: UNAUTHORIZED,
            503: _error(DomainError("llm_unavailable")),
        },
    )
    async def models(self, profile: NamedDependency[ReadyProfile], llm: NamedDependency[LLMProxy]) -> ModelList:
        return await llm.models(profile.id)
