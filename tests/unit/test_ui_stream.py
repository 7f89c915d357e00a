"""A turn's events as the Vercel AI SDK's UI message stream (service.chat.ui_stream), the user's message read
from the body DefaultChatTransport posts, and the stream's SSE framing (service.chat.ui_controller)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from service.chat import sse, ui_controller
from service.chat.journal import Numbered
from service.chat.ui_stream import UIChatRequest, UIMessageStream, frame, newest_user_text
from service.errors import DomainError
from service.web.problems import sentence
from tests.unit.test_sse import a_turn

TURN = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
TEXT = f"text-{TURN}"
TURN_EVENT: Numbered = (1, "turn", {"turn_id": TURN, "user_message_id": "0c4"})


def done(status: str = "complete", **extra: Any) -> dict[str, Any]:
    return {"turn_id": TURN, "status": status, "user_message_id": "0c4", "message_id": "7aa", "cost": 0.1, **extra}


def mapped(*events: Numbered) -> list[dict[str, Any]]:
    ui = UIMessageStream(TURN)
    return [chunk for event in events for chunk in ui.chunks(event)]


def test_a_reply_is_one_message_with_one_text_part_then_finish() -> None:
    chunks = mapped(
        TURN_EVENT,
        (2, "delta", {"text": "Hel"}),
        (3, "delta", {"text": "lo"}),
        (4, "usage", {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
        (5, "done", done()),
    )

    assert chunks == [
        {"type": "start", "messageId": TURN, "messageMetadata": {"turn_id": TURN, "user_message_id": "0c4"}},
        {"type": "text-start", "id": TEXT},
        {"type": "text-delta", "id": TEXT, "delta": "Hel"},
        {"type": "text-delta", "id": TEXT, "delta": "lo"},
        {"type": "text-end", "id": TEXT},
        {"type": "finish", "finishReason": "stop", "messageMetadata": done()},
    ]


def test_memory_tools_are_dynamic_tool_parts_the_agent_executed() -> None:
    chunks = mapped(
        TURN_EVENT,
        (2, "tool", {"phase": "call", "name": "memory_insert", "id": "call_1"}),
        (3, "tool", {"phase": "call", "name": "memory_insert", "id": "call_1"}),  # repeated while arguments stream
        (4, "tool", {"phase": "return", "name": "memory_insert", "id": "call_1", "status": "success"}),
        (5, "tool", {"phase": "call", "name": "memory_replace", "id": "call_2"}),
        (6, "tool", {"phase": "return", "name": "memory_replace", "id": "call_2", "status": "error"}),
        (7, "delta", {"text": "Got it"}),
    )[1:]

    assert chunks == [
        {
            "type": "tool-input-available",
            "toolCallId": "call_1",
            "toolName": "memory_insert",
            "input": {},
            "dynamic": True,
            "providerExecuted": True,
        },
        {"type": "tool-output-available", "toolCallId": "call_1", "output": {}},
        {
            "type": "tool-input-available",
            "toolCallId": "call_2",
            "toolName": "memory_replace",
            "input": {},
            "dynamic": True,
            "providerExecuted": True,
        },
        {"type": "tool-output-error", "toolCallId": "call_2", "errorText": "memory_replace failed"},
        {"type": "text-start", "id": TEXT},
        {"type": "text-delta", "id": TEXT, "delta": "Got it"},
    ]


def test_tool_calls_without_ids_get_ids_stable_across_a_replay() -> None:
    events: list[Numbered] = [
        TURN_EVENT,
        (2, "tool", {"phase": "call", "name": "memory_insert", "id": None}),
        (3, "tool", {"phase": "return", "name": "memory_insert", "id": None, "status": "success"}),
    ]
    first, replay = mapped(*events), mapped(*events)

    assert first == replay
    assert first[1]["toolCallId"] == first[2]["toolCallId"] == f"call-{TURN}-2"


def test_a_tool_return_whose_call_was_not_seen_announces_the_call_first() -> None:
    # The SDK's reader fails on an output for a call it does not know: the call is announced first.
    chunks = mapped(TURN_EVENT, (2, "tool", {"phase": "return", "name": "memory_insert", "id": "c9"}))[1:]

    assert [(c["type"], c["toolCallId"]) for c in chunks] == [
        ("tool-input-available", "c9"),
        ("tool-output-available", "c9"),
    ]


def test_an_error_closes_the_text_and_carries_the_sentence_never_upstream_words() -> None:
    chunks = mapped(
        TURN_EVENT,
        (2, "delta", {"text": "Hal"}),
        (3, "error", {"code": "llm_error", "message": "upstream: OpenAI 500 secret detail"}),
        (4, "done", done("failed")),
    )[2:]

    assert chunks == [
        {"type": "text-delta", "id": TEXT, "delta": "Hal"},
        {"type": "text-end", "id": TEXT},
        {"type": "error", "errorText": sentence("llm_error")},
        {"type": "finish", "finishReason": "error", "messageMetadata": done("failed")},
    ]
    assert "secret" not in json.dumps(chunks)


def test_an_unknown_error_code_is_the_internal_sentence() -> None:
    chunks = mapped(TURN_EVENT, (2, "error", {"code": "something_new"}))

    assert chunks[-1] == {"type": "error", "errorText": sentence("internal")}


def test_a_cancelled_turn_aborts_then_finishes() -> None:
    chunks = mapped(TURN_EVENT, (2, "delta", {"text": "a"}), (3, "done", done("cancelled")))[3:]

    assert chunks == [
        {"type": "text-end", "id": TEXT},
        {"type": "abort", "reason": "cancelled"},
        {"type": "finish", "finishReason": "other", "messageMetadata": done("cancelled")},
    ]


def test_a_reply_without_text_has_no_text_part() -> None:
    chunks = mapped(TURN_EVENT, (2, "done", done("failed")))

    assert [c["type"] for c in chunks] == ["start", "finish"]


def test_a_replay_missing_its_first_events_still_starts_the_message() -> None:
    chunks = mapped((5, "delta", {"text": "lo"}), (6, "done", done()))

    assert [c["type"] for c in chunks] == ["start", "text-start", "text-delta", "text-end", "finish"]
    assert chunks[0] == {"type": "start", "messageId": TURN}


def test_a_stream_that_ends_without_done_finishes_interrupted() -> None:
    ui = UIMessageStream(TURN)
    ui.chunks(TURN_EVENT)
    ui.chunks((2, "delta", {"text": "a"}))

    assert ui.end() == [{"type": "text-end", "id": TEXT}, {"type": "finish", "finishReason": "interrupted"}]
    assert ui.end() == []
    assert ui.chunks((3, "delta", {"text": "late"})) == []


def test_nothing_follows_done() -> None:
    ui = UIMessageStream(TURN)
    ui.chunks((1, "done", done()))

    assert ui.end() == []


def test_a_chunk_is_one_data_line() -> None:
    assert frame({"type": "text-delta", "id": "t", "delta": "é\n"}) == (
        b'data: {"type":"text-delta","id":"t","delta":"\xc3\xa9\\n"}\n\n'
    )


# -- the request body ---------------------------------------------------------------------------------------------


def body(messages: list[dict[str, Any]], **extra: Any) -> UIChatRequest:
    raw = {"id": "chat-1", "messages": messages, "trigger": "submit-message", **extra}
    return msgspec.convert(raw, UIChatRequest)


def user(*parts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "m", "role": "user", "parts": list(parts), **extra}


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **extra}


def test_only_the_last_user_messages_text_parts_are_read() -> None:
    request = body(
        [
            user(text("an earlier question")),
            {"id": "a", "role": "assistant", "parts": [{"type": "step-start"}, text("an answer", state="done")]},
            user(text("first"), {"type": "file", "mediaType": "image/png", "url": "data:,"}, text("second")),
        ],
        messageId=None,
        extraFromTheBodyOption=1,
    )

    assert newest_user_text(request) == "first\n\nsecond"


def test_the_transports_own_body_decodes() -> None:
    raw = (
        b'{"id":"c","messages":[{"id":"m","role":"user","metadata":{"x":1},"parts":[{"type":"text","text":"hi"}]}],'
        b'"trigger":"regenerate-message","messageId":"m"}'
    )
    request = msgspec.json.decode(raw, type=UIChatRequest)

    assert request.message_id == "m" and newest_user_text(request) == "hi"


@pytest.mark.parametrize(
    ("messages", "trigger", "detail"),
    [
        ([], "submit-message", "the last message must be the user's message"),
        ([{"id": "a", "role": "assistant", "parts": [text("x")]}], "submit-message", "the last message must be"),
        ([user({"type": "file", "mediaType": "image/png", "url": "data:,"})], "submit-message", "no text part"),
        ([user(text(""))], "submit-message", "no text part"),
        ([user(text("hi"))], "resume-stream", "trigger must be"),
    ],
)
def test_a_body_without_a_user_message_to_send_is_refused(
    messages: list[dict[str, Any]], trigger: str, detail: str
) -> None:
    with pytest.raises(DomainError) as error:
        newest_user_text(body(messages, trigger=trigger))

    assert error.value.code == "invalid_message"
    assert detail in (error.value.detail or "")


# -- the SSE body -------------------------------------------------------------------------------------------------


async def test_the_live_stream_writes_emitted_chunks_together_then_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.05)
    turn = a_turn(uuid.UUID(TURN))
    stream = ui_controller._live(turn)

    assert await anext(stream) == b": keep-alive\n\n"
    for name, data in [("turn", TURN_EVENT[2]), ("delta", {"text": "Hi"}), ("done", done())]:
        turn.emit((name, data))
    turn.end()
    body = await anext(stream)
    with pytest.raises(StopAsyncIteration):
        await anext(stream)

    lines = body.decode().split("\n\n")
    assert [json.loads(line[6:])["type"] for line in lines[:-2]] == [
        "start",
        "text-start",
        "text-delta",
        "text-end",
        "finish",
    ]
    assert lines[-2:] == ["data: [DONE]", ""]


async def test_a_replayed_stream_keeps_alive_and_finishes_interrupted_if_the_events_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.05)
    gate = asyncio.Event()

    async def events() -> AsyncIterator[Numbered]:
        yield TURN_EVENT
        await gate.wait()
        yield (2, "delta", {"text": "a"})

    stream = ui_controller._replayed(events(), TURN)
    first = await anext(stream)
    assert json.loads(first[6:])["type"] == "start"
    assert await anext(stream) == b": keep-alive\n\n"
    gate.set()
    rest = [chunk async for chunk in stream if chunk != b": keep-alive\n\n"]

    assert rest[-1].endswith(b'data: {"type":"finish","finishReason":"interrupted"}\n\ndata: [DONE]\n\n')
