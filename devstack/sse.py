"""Server-Sent Events as a client reads them: the one parser the tests and the benchmarks share.

The service's chat stream (``service/chat/sse.py``) and Letta's stream both frame an event as ``event:`` and
``data:`` lines ended by a blank line, with ``:`` comment lines as keep-alives. Parsed as the WHATWG rules say
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation), minus what no
client here needs (``id``, ``retry``, reconnecting):

* the body is UTF-8, and a line ends at CR LF, LF or CR only: not at the other breaks ``str.splitlines`` and
  httpx's ``aiter_lines`` split on (U+2028, U+0085, ...), which JSON encoders leave unescaped in strings;
* a line starting with ``:`` is a comment;
* ``field: value`` loses one space after the colon; a line without a colon is a field with an empty value;
* an event's ``data`` lines are joined with ``\\n``; its name (``event:``) is for that event only;
* a blank line ends an event, which is dispatched if it has data.

Unlike a browser, an event the body ends in without its blank line is still yielded: a test wants to see
what a stream that was cut short did send.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx

SSEEvent = tuple[str | None, str]  # (the event's name, or None when it has none; its data)
_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEDecoder:
    """Incremental: ``feed`` text as it arrives, cut anywhere, and get the events it completes; ``close``
    at the end of the body."""

    def __init__(self) -> None:
        self._buffer = ""  # the start of a line not ended yet
        self._name: str | None = None
        self._data: list[str] = []
        self._started = False
        self.last_event_id = ""  # the last id: field seen (what a reconnecting client sends back)
        self.ids: list[str] = []  # the id in force when each event was dispatched, in order

    def feed(self, text: str) -> list[SSEEvent]:
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")  # a byte order mark is not part of the first line
        text = self._buffer + text
        # A CR at the end may be the first half of a CR LF: keep it until the next piece says.
        held = "\r" if text.endswith("\r") else ""
        *lines, rest = _LINE_END.split(text.removesuffix(held))
        self._buffer = rest + held
        return self._lines(lines)

    def close(self) -> list[SSEEvent]:
        """The events still pending when the body ended."""
        lines = _LINE_END.split(self._buffer)
        self._buffer = ""
        if lines[-1] == "":  # the buffer ended with a line end
            lines.pop()
        events = self._lines(lines)
        last = self._dispatch()
        return [*events, last] if last else events

    def _lines(self, lines: list[str]) -> list[SSEEvent]:
        events = []
        for line in lines:
            if not line:
                event = self._dispatch()
                if event:
                    events.append(event)
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    self._name = value
                elif field == "data":
                    self._data.append(value)
                elif field == "id" and "\x00" not in value:
                    self.last_event_id = value  # as EventSource keeps it: it stays until another id comes
                # retry and unknown fields: nothing a client here uses
        return events

    def _dispatch(self) -> SSEEvent | None:
        event = (self._name or None, "\n".join(self._data)) if self._data else None
        if event is not None:
            self.ids.append(self.last_event_id)
        self._name, self._data = None, []
        return event


async def aiter_sse(response: httpx.Response) -> AsyncIterator[SSEEvent]:
    """``(name or None, data)`` per event of a streamed (or already read) response; comments are skipped."""
    decoder = SSEDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    async for chunk in response.aiter_bytes():
        for event in decoder.feed(utf8.decode(chunk)):
            yield event
    for event in [*decoder.feed(utf8.decode(b"", final=True)), *decoder.close()]:
        yield event


def parse_sse(text: str) -> list[SSEEvent]:
    """``(name or None, data)`` per event of a body already read as text."""
    decoder = SSEDecoder()
    return [*decoder.feed(text), *decoder.close()]


def json_object(data: str) -> dict[str, Any]:
    """``data`` decoded as JSON; a value that is not an object comes back as ``{"value": value}``, so that
    ``.get`` works on any answer. Raises ``ValueError`` if it is not JSON."""
    value = json.loads(data)
    return value if isinstance(value, dict) else {"value": value}


async def aiter_json_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The named events of the response (every chat event of the service has one), their data decoded by
    ``json_object``; events without a name (Letta's data-only events) are skipped."""
    async for name, data in aiter_sse(response):
        if name is not None:
            yield name, json_object(data)


def parse_json_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``aiter_json_events`` for a body already read as text."""
    return [(name, json_object(data)) for name, data in parse_sse(text) if name is not None]


async def aiter_numbered_events(response: httpx.Response) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
    """``(id, name, data)`` per named event of the service's chat stream: the id is what a client sends back as
    ``Last-Event-ID`` to resume after that event."""
    decoder = SSEDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    async for chunk in response.aiter_bytes():
        events = decoder.feed(utf8.decode(chunk))
        ids = decoder.ids[len(decoder.ids) - len(events) :]
        for event_id, (name, data) in zip(ids, events, strict=True):
            if name is not None:
                yield int(event_id), name, json_object(data)
