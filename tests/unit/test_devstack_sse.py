"""The SSE parser the tests and the benchmarks read streams with (devstack/sse.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from devstack.sse import SSEDecoder, aiter_json_events, aiter_sse, json_object, parse_json_events, parse_sse
from service.chat.sse import sse


class Chunks(httpx.AsyncByteStream):
    """A response body arriving in the given pieces, as the network cuts it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def streamed(body: bytes, size: int) -> httpx.Response:
    return httpx.Response(200, stream=Chunks([body[i : i + size] for i in range(0, len(body), size)]))


async def collect(response: httpx.Response) -> list[tuple[str | None, str]]:
    return [event async for event in aiter_sse(response)]


def test_the_services_own_framing_reads_back_with_keep_alives_skipped() -> None:
    body = (
        sse((1, "turn", {"turn_id": "t-1", "user_message_id": "m-1"}))
        + b": keep-alive\n\n"
        + sse((2, "delta", {"text": "Hi"}))
        + sse((3, "done", {"status": "complete"}))
    ).decode()
    assert parse_sse(body) == [
        ("turn", '{"turn_id":"t-1","user_message_id":"m-1"}'),
        ("delta", '{"text":"Hi"}'),
        ("done", '{"status":"complete"}'),
    ]


def test_comment_lines_are_skipped_even_inside_an_event() -> None:
    assert parse_sse(": hello\nevent: delta\n: ping\ndata: x\n\n:\n\n") == [("delta", "x")]


def test_data_lines_are_joined_with_newlines() -> None:
    assert parse_sse("event: delta\ndata: one\ndata:two\ndata\ndata:  four\n\n") == [("delta", "one\ntwo\n\n four")]


def test_a_name_belongs_to_its_event_only_and_an_event_may_have_none() -> None:
    assert parse_sse("event: delta\ndata: a\n\ndata: b\n\nevent:\ndata: c\n\n") == [
        ("delta", "a"),
        (None, "b"),
        (None, "c"),
    ]


def test_an_event_without_data_is_not_dispatched_and_its_name_does_not_carry_over() -> None:
    assert parse_sse("event: ignored\n\ndata: plain\n\n") == [(None, "plain")]


def test_unknown_fields_id_and_retry_are_ignored() -> None:
    assert parse_sse("id: 7\nretry: 1000\nfoo: bar\nevent: delta\ndata: x\n\n") == [("delta", "x")]


@pytest.mark.parametrize("end", ["\r\n", "\r", "\n"], ids=["crlf", "cr", "lf"])
def test_every_sse_line_end_is_a_line_end(end: str) -> None:
    body = f"event: delta{end}data: a{end}data: b{end}{end}data: c{end}{end}"
    assert parse_sse(body) == [("delta", "a\nb"), (None, "c")]


def test_other_unicode_line_breaks_stay_inside_the_data() -> None:
    # JSON encoders (msgspec, pydantic) leave U+2028 and U+0085 raw in strings; str.splitlines would cut there.
    text = "a\u2028b\x85c\x0bd"
    body = sse((1, "delta", {"text": text})).decode()
    assert parse_json_events(body) == [("delta", {"text": text})]


def test_an_event_the_body_ends_in_is_still_yielded() -> None:
    assert parse_sse("data: first\n\nevent: delta\ndata: cut") == [(None, "first"), ("delta", "cut")]
    assert parse_sse("data: [DONE]\r") == [(None, "[DONE]")]


def test_a_byte_order_mark_at_the_start_is_dropped() -> None:
    assert parse_sse("\ufeffevent: delta\ndata: x\n\n") == [("delta", "x")]


def test_the_decoder_gives_the_same_events_however_the_text_is_cut() -> None:
    body = "event: delta\r\ndata: a\r\n: keep-alive\r\n\r\nevent: done\rdata: {}\r\rdata: tail"
    expected = [("delta", "a"), ("done", "{}"), (None, "tail")]
    assert parse_sse(body) == expected
    for cut in range(len(body) + 1):
        decoder = SSEDecoder()
        events = [*decoder.feed(body[:cut]), *decoder.feed(body[cut:]), *decoder.close()]
        assert events == expected, cut
    decoder = SSEDecoder()
    assert [event for char in body for event in decoder.feed(char)] + decoder.close() == expected


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
async def test_a_streamed_response_is_parsed_across_any_chunking(size: int) -> None:
    # "é" and "€" are 2 and 3 bytes in UTF-8: small chunks cut them in the middle.
    body = "event: delta\r\ndata: café €\r\n\r\n: keep-alive\n\nevent: done\ndata: {}\n\n".encode()
    assert await collect(streamed(body, size)) == [("delta", "café €"), ("done", "{}")]


async def test_an_already_read_response_is_parsed_too() -> None:
    response = httpx.Response(200, content=b"event: delta\ndata: x\n\n")
    await response.aread()
    assert await collect(response) == [("delta", "x")]


async def test_json_events_are_the_named_ones_decoded() -> None:
    body = b'data: {"message_type":"ping"}\n\nevent: delta\ndata: {"text":"Hi"}\n\nevent: done\ndata: [1]\n\n'
    events = [event async for event in aiter_json_events(streamed(body, 5))]
    assert events == [("delta", {"text": "Hi"}), ("done", {"value": [1]})]
    assert parse_json_events(body.decode()) == events


def test_json_object() -> None:
    assert json_object('{"a": 1}') == {"a": 1}
    assert json_object("[1, 2]") == {"value": [1, 2]}
    assert json_object('"[DONE]"') == {"value": "[DONE]"}
    with pytest.raises(ValueError):
        json_object("[DONE]")
    with pytest.raises(json.JSONDecodeError):
        json_object("")


def test_each_event_keeps_the_id_in_force_when_it_was_dispatched() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(sse((7, "delta", {"text": "a"})).decode() + "event: ping\ndata: x\n\n")
    assert events == [("delta", '{"text":"a"}'), ("ping", "x")]
    assert decoder.ids == ["7", "7"] and decoder.last_event_id == "7"  # an event without id keeps the last one
