"""The LLM proxy's pure parts: the request checks (as OpenAI's API checks, then our bounds), OpenAI's error shape
with the problem table's codes, statuses and sentences, the mapping of LiteLLM's refusals, and its settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from litestar import Litestar, post
from litestar.exceptions import NotAuthorizedException
from litestar.params import Body, FromPath
from litestar.testing import AsyncTestClient

from service.errors import DomainError
from service.llm.calls import CallRecord, parse_request, sse_data
from service.llm.errors import error_type, openai_error_of, openai_error_response, sse_error, upstream_refusal
from service.settings import Settings, load_settings
from service.web.problems import ERRORS, ProblemRequest
from tests.unit.test_settings import MINIMAL


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings({**MINIMAL, "LLM_PROXY_MAX_TOKENS": "1000", "LLM_PROXY_MAX_MESSAGES": "3"})


def request(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **extra}


def refusal(data: dict[str, Any], settings: Settings) -> DomainError:
    with pytest.raises(DomainError) as caught:
        parse_request(data, settings)
    return caught.value


# -- settings -----------------------------------------------------------------------------------------------------


def test_the_allowed_models_default_to_llm_model_and_are_comma_separated() -> None:
    assert load_settings(MINIMAL).llm_proxy_models == ["gpt-4o-mini"]
    assert load_settings({**MINIMAL, "LLM_MODEL": "gpt-4.1"}).llm_proxy_models == ["gpt-4.1"]
    allowed = load_settings({**MINIMAL, "LLM_PROXY_MODELS": " gpt-4o-mini, gpt-4.1 ,"})
    assert allowed.llm_proxy_models == ["gpt-4o-mini", "gpt-4.1"]
    defaults = load_settings(MINIMAL)
    assert (defaults.llm_proxy_max_tokens, defaults.llm_proxy_max_messages, defaults.rate_limit_llm_per_minute) == (
        4096,
        100,
        30,
    )


# -- the request ----------------------------------------------------------------------------------------------------


def test_a_valid_request_is_forwarded_as_written_with_its_output_bounded(settings: Settings) -> None:
    call = parse_request(request(temperature=0.2, seed=7), settings)
    assert call.body == {**request(temperature=0.2, seed=7), "max_tokens": 1000}
    assert (call.model, call.stream, call.include_usage) == ("gpt-4o-mini", False, False)
    named = parse_request(request(max_completion_tokens=10), settings)
    assert "max_tokens" not in named.body and named.body["max_completion_tokens"] == 10


def test_a_stream_always_asks_litellm_for_usage_and_remembers_whether_the_client_did(settings: Settings) -> None:
    silent = parse_request(request(stream=True), settings)
    asked = parse_request(request(stream=True, stream_options={"include_usage": True}), settings)
    assert silent.body["stream_options"] == asked.body["stream_options"] == {"include_usage": True}
    assert (silent.stream, silent.include_usage, asked.include_usage) == (True, False, True)


@pytest.mark.parametrize(
    ("data", "param", "message"),
    [
        (request(foo=1), "foo", "Unrecognized request argument supplied: foo"),
        (request(store=True), "store", "store is not supported by this endpoint"),
        (request(max_tokens="5"), "max_tokens", "Expected `int | null`, got `str` - at `$.max_tokens`"),
        (request(temperature=3), "temperature", "Expected `float` <= 2"),
        (request(n=2), "n", "n must be 1"),
        (request(max_tokens=1001), "max_tokens", "max_tokens may be at most 1000"),
        (request(max_completion_tokens=5000), "max_completion_tokens", "may be at most 1000"),
        (request(messages=[]), "messages", "at least one message"),
        (request(messages=[{"role": "user", "content": "x"}] * 4), "messages", "at most 3 messages"),
        (request(messages=[{"role": "user", "content": "x", "foo": 1}]), "messages[0]", "unknown field `foo`"),
        (request(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role", "Invalid enum value"),
        (
            request(messages=[{"role": "user", "content": [{"type": "video", "video": "x"}]}]),
            "messages[0].content[0].type",
            "Invalid value 'video'",
        ),
        (request(stream_options={"include_usage": True}), "stream_options", "only allowed when stream is true"),
        ({"messages": [{"role": "user", "content": "x"}]}, None, "missing required field `model`"),
    ],
)
def test_what_openai_refuses_is_refused_with_the_param(
    settings: Settings, data: dict[str, Any], param: str | None, message: str
) -> None:
    error = refusal(data, settings)
    assert error.code == "llm_invalid_request"
    assert error.members["param"] == param
    assert error.detail is not None and message in error.detail


def test_content_parts_of_every_kind_openai_takes_are_accepted(settings: Settings) -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
    ]
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": content},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {}}]},
    ]
    assert parse_request(request(messages=messages), load_settings(MINIMAL)).body["messages"] == messages


def test_a_model_not_allowed_is_403(settings: Settings) -> None:
    error = refusal(request(model="gpt-4"), settings)
    assert (error.code, error.members["param"]) == ("model_not_allowed", "model")
    assert openai_error_of(error)["error"]["type"] == "permission_error"


def test_a_long_refusal_is_cut_short(settings: Settings) -> None:
    name = "x" * 5000
    error = refusal(request(**{name: 1}), settings)
    assert error.detail is not None and len(error.detail) <= 300


# -- OpenAI's error shape -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_every_code_has_the_problem_tables_status_type_and_sentence(code: str) -> None:
    spec = ERRORS[code]
    body = openai_error_of(DomainError(code))
    assert body == {"error": {"message": spec.sentence, "type": error_type(spec.status), "param": None, "code": code}}


def test_the_types_openai_clients_know_by_status() -> None:
    assert [error_type(s) for s in (400, 401, 402, 403, 404, 413, 422, 429, 500, 502, 503, 504)] == [
        "invalid_request_error",
        "authentication_error",
        "insufficient_quota",
        "permission_error",
        "not_found_error",
        "invalid_request_error",
        "invalid_request_error",
        "rate_limit_error",
        "server_error",
        "server_error",
        "server_error",
        "server_error",
    ]


def test_a_failure_mid_stream_is_an_sse_error_event() -> None:
    event = sse_error(DomainError("llm_error"))
    assert event == (
        b'data: {"error":{"message":"the language model failed to answer","type":"server_error",'
        b'"param":null,"code":"llm_error"}}\n\n'
    )


@post("/raise/{kind:str}", request_max_body_size=64, exception_handlers={Exception: openai_error_response})
async def raising(kind: FromPath[str], data: Annotated[dict[str, Any], Body()]) -> None:
    if kind == "domain":
        raise DomainError("rate_limited", "rate limit for 'llm' reached", retry_after=7, bucket="llm", limit=3)
    if kind == "param":
        raise DomainError("llm_invalid_request", "n must be 1", param="n")
    if kind == "unauthorized":
        raise NotAuthorizedException(detail="token has expired")
    if kind == "database":
        raise ConnectionRefusedError("10.0.0.5:5432")
    raise RuntimeError("secret internals")


@pytest.fixture
async def app() -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(Litestar([raising], request_class=ProblemRequest, logging_config=None)) as client:
        yield client


@pytest.mark.parametrize(
    ("kind", "content", "status", "code", "message", "param"),
    [
        ("domain", b"{}", 429, "rate_limited", "rate limit for 'llm' reached", None),
        ("param", b"{}", 400, "llm_invalid_request", "n must be 1", "n"),
        ("unauthorized", b"{}", 401, "unauthorized", "token has expired", None),
        ("database", b"{}", 503, "database_unavailable", ERRORS["database_unavailable"].sentence, None),
        ("other", b"{}", 500, "internal", "an unexpected error occurred", None),
        (
            "domain",
            b"{" + b" " * 100 + b"}",
            413,
            "llm_request_too_large",
            ERRORS["llm_request_too_large"].sentence,
            None,
        ),
        ("domain", b"{not json", 400, "llm_invalid_request", "the body must be a JSON object", None),
        ("domain", b"[1, 2]", 400, "llm_invalid_request", "the body must be a JSON object", None),
        ("domain", b'{"a": "\xff"}', 400, "llm_invalid_request", "the body must be a JSON object", None),
    ],
)
async def test_errors_are_the_apis_problems_in_openai_shape(
    app: AsyncTestClient[Litestar], kind: str, content: bytes, status: int, code: str, message: str, param: str | None
) -> None:
    response = await app.post(f"/raise/{kind}", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {
            "message": response.json()["error"]["message"],
            "type": error_type(status),
            "param": param,
            "code": code,
        }
    }
    assert response.json()["error"]["message"].startswith(message)
    assert "secret" not in response.text and "10.0.0.5" not in response.text
    if code == "rate_limited":
        assert response.headers["retry-after"] == "7"
    if code == "database_unavailable":
        assert response.headers["retry-after"] == "5"


# -- LiteLLM's answers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (
            422,
            b'{"error": {"message": "ExceededBudget: User=u over budget", "type": "budget_exceeded"}}',
            "budget_exceeded",
        ),
        (400, b'{"error": {"message": "Budget has been exceeded!", "type": "budget_exceeded"}}', "budget_exceeded"),
        (429, b'{"error": {"message": "rpm limit", "type": "rate_limit_error"}}', "rate_limited"),
        (400, b'{"error": {"message": "context window exceeded", "type": "invalid_request_error"}}', "llm_rejected"),
        (422, b"{}", "llm_rejected"),
        (401, b'{"error": {"message": "Invalid proxy server token", "type": "auth_error"}}', "llm_error"),
        (500, b"<html>bad gateway</html>", "llm_error"),
        (503, b"", "llm_error"),
    ],
)
def test_litellms_refusals_map_to_our_codes(status: int, body: bytes, code: str) -> None:
    error = upstream_refusal(status, body)
    assert error.code == code
    assert error.detail is None or "budget" not in error.detail.lower()  # our sentence, never LiteLLM's


async def test_litellms_stream_is_read_event_by_event() -> None:
    raw = b'data: {"id":"a"}\n\n: a comment\n\ndata: {"id":\ndata: "b"}\n\nevent: x\ndata: [DONE]\n\n'
    response = httpx.Response(200, content=raw)
    assert [data async for data in sse_data(response)] == ['{"id":"a"}', '{"id":\n"b"}', "[DONE]"]


def test_usage_gives_the_calls_tokens_and_litellms_cost() -> None:
    record = CallRecord(id=None, user_id=None, model="m")  # type: ignore[arg-type]
    record.take_usage({"prompt_tokens": 10, "completion_tokens": 5, "cost": 1.5e-06})
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (10, 5, 15)
    assert str(record.cost) == "0.0000015"
    record.take_usage({"prompt_tokens": -1, "completion_tokens": True, "total_tokens": "9", "cost": "nan"})
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens, str(record.cost)) == (
        None,
        None,
        None,
        "0.0000015",
    )
