"""What the LLM proxy takes and answers with: OpenAI's chat completion request (validated here, forwarded as the
client wrote it), the model list, and OpenAI's error body.

The request types check what OpenAI's API checks (types, ranges, no unknown members in a message or a content
part); their values are never rebuilt: the body LiteLLM gets is the client's own, with ``user`` (and, streamed,
``stream_options``) set by the service. Completions are LiteLLM's response passed through; ``ChatCompletion``
documents that shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

# Top-level members of OpenAI's chat completion request (openai 2.x ``CompletionCreateParams``): those the proxy
# forwards, and those it refuses by name (they change who stores the data or what a call costs: audio, service
# tiers, stored completions, web search; or are deprecated: functions).
FORWARDED_FIELDS = frozenset(
    [
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stream",
        "stream_options",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        "seed",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "reasoning_effort",
        "verbosity",
    ]
)
UNSUPPORTED_FIELDS = frozenset(
    [
        "audio",
        "function_call",
        "functions",
        "metadata",
        "modalities",
        "moderation",
        "prediction",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "store",
        "web_search_options",
    ]
)

_Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]


class TextPart(msgspec.Struct, tag_field="type", tag="text", forbid_unknown_fields=True):
    text: str


class ImageURL(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(msgspec.Struct, tag_field="type", tag="image_url", forbid_unknown_fields=True):
    image_url: ImageURL


class InputAudio(msgspec.Struct, forbid_unknown_fields=True):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(msgspec.Struct, tag_field="type", tag="input_audio", forbid_unknown_fields=True):
    input_audio: InputAudio


class FileRef(msgspec.Struct, forbid_unknown_fields=True):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class FilePart(msgspec.Struct, tag_field="type", tag="file", forbid_unknown_fields=True):
    file: FileRef


class RefusalPart(msgspec.Struct, tag_field="type", tag="refusal", forbid_unknown_fields=True):
    refusal: str


ContentPart = TextPart | ImagePart | AudioPart | FilePart | RefusalPart


class Message(msgspec.Struct, forbid_unknown_fields=True):
    """One message of any role (OpenAI's per-role rules beyond these are the model's to enforce)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatCompletionRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The members the proxy forwards (``FORWARDED_FIELDS``), typed and bounded as OpenAI's API bounds them."""

    model: str
    messages: list[Message]
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[str], msgspec.Meta(max_length=4)] | None = None
    presence_penalty: _Penalty | None = None
    frequency_penalty: _Penalty | None = None
    logit_bias: dict[str, Annotated[int, msgspec.Meta(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


# -- answers (documentation of LiteLLM's pass-through, and what the service builds itself) ----------------------


class Model(msgspec.Struct):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(msgspec.Struct):
    object: str
    data: list[Model]


class ChatCompletion(msgspec.Struct, kw_only=True):
    """OpenAI's ``chat.completion`` as LiteLLM answers it (documentation only: the body is passed through)."""

    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    system_fingerprint: str | None = None


class OpenAIErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIError(msgspec.Struct):
    """OpenAI's error body: what OpenAI's SDKs parse (``APIStatusError.code``, ``.message``, ``.param``)."""

    error: OpenAIErrorDetail
