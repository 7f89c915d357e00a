"""A turn's events as the Vercel AI SDK's UI message stream (npm ``ai`` 7.x), and the user's message in the body
its ``DefaultChatTransport`` sends. Pure: no I/O.

One turn is one assistant UI message, whose id is the turn's id (the same on the live stream and on a replay,
so a resumed stream replaces the message it continues). The mapping, event by event (README, "The Vercel AI
SDK"):

- ``turn`` -> ``start`` (``messageId``: the turn id; ``messageMetadata``: ``turn_id``, ``user_message_id``);
- ``delta`` -> ``text-delta``, after one ``text-start`` at the first: one text part per reply, id
  ``text-<turn id>``;
- ``tool`` call -> ``tool-input-available`` (``dynamic`` and ``providerExecuted``: the agent ran it; the
  client has nothing to execute), return -> ``tool-output-available`` (``tool-output-error`` when it failed);
- ``usage`` -> nothing (the ``finish`` carries the totals);
- ``error`` -> ``text-end`` if a text part is open, then ``error`` with the sentence of its code (never the
  upstream's words);
- ``done`` -> ``text-end`` if open, ``abort`` for a cancelled turn, then ``finish`` (``finishReason``
  ``stop`` / ``error`` / ``other``; ``messageMetadata``: the ``done`` event's data: message id, tokens, cost);
- the end of a stream that never saw ``done`` -> ``finish`` with ``finishReason: "interrupted"``.

The SSE body is ``data: <chunk>`` for each chunk, then ``data: [DONE]``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from service.chat.journal import Numbered
from service.chat.sse import present
from service.errors import DomainError

Chunk = dict[str, Any]

UI_STREAM_HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
DONE = b"data: [DONE]\n\n"

_FINISH_REASONS = {"complete": "stop", "failed": "error", "cancelled": "other"}
_TRIGGERS = frozenset({"submit-message", "regenerate-message"})


class UIMessageStream:
    """Maps the events of one turn, in order, to UI message chunks.

    Keeps what later chunks depend on: whether ``start`` went out, whether the text part is open, which tool
    calls were announced. A tool call without an id gets one made of the turn id and the event's number, which a
    replay numbers the same way, so ids are stable across a live stream and its replay.
    """

    def __init__(self, turn_id: str) -> None:
        self.turn_id = turn_id
        self.text_id = f"text-{turn_id}"
        self.finished = False
        self._started = False
        self._text_open = False
        self._announced: set[str] = set()
        self._unanswered: dict[str, str] = {}  # announced call id -> tool name, until its return

    def chunks(self, event: Numbered) -> list[Chunk]:
        """The chunks of one event (none after ``done``)."""
        seq, name, data = event
        if self.finished:
            return []
        out: list[Chunk] = []
        if name == "turn":
            self._started = True
            metadata = {"turn_id": data["turn_id"], "user_message_id": data["user_message_id"]}
            return [{"type": "start", "messageId": self.turn_id, "messageMetadata": metadata}]
        if not self._started:  # a replay whose first events were not kept: the message still starts
            self._started = True
            out.append({"type": "start", "messageId": self.turn_id})
        if name == "delta":
            if not self._text_open:
                self._text_open = True
                out.append({"type": "text-start", "id": self.text_id})
            out.append({"type": "text-delta", "id": self.text_id, "delta": data["text"]})
        elif name == "tool":
            out.extend(self._tool(seq, data))
        elif name == "error":
            out.extend(self._close_text())
            out.append({"type": "error", "errorText": present((name, data))[1]["message"]})
        elif name == "done":
            self.finished = True
            out.extend(self._close_text())
            if data.get("status") == "cancelled":
                out.append({"type": "abort", "reason": "cancelled"})
            reason = _FINISH_REASONS.get(str(data.get("status")), "other")
            out.append({"type": "finish", "finishReason": reason, "messageMetadata": data})
        return out

    def end(self) -> list[Chunk]:
        """The chunks that close a stream whose events stopped before ``done`` (nothing after ``done``)."""
        if self.finished:
            return []
        self.finished = True
        start = [] if self._started else [{"type": "start", "messageId": self.turn_id}]
        return [*start, *self._close_text(), {"type": "finish", "finishReason": "interrupted"}]

    def _close_text(self) -> list[Chunk]:
        if not self._text_open:
            return []
        self._text_open = False
        return [{"type": "text-end", "id": self.text_id}]

    def _tool(self, seq: int, data: dict[str, Any]) -> list[Chunk]:
        name = str(data.get("name") or "tool")
        call_id = data.get("id")
        if data.get("phase") == "call":
            call_id = str(call_id) if call_id else f"call-{self.turn_id}-{seq}"
            if call_id in self._announced:  # a call repeated while its arguments stream
                return []
            return [self._announce(call_id, name)]
        out: list[Chunk] = []
        if not call_id:  # the oldest unanswered call of that tool
            call_id = next((c for c, n in self._unanswered.items() if n == name), None)
        if not call_id or str(call_id) not in self._announced:  # a return whose call was not seen: announce it
            call_id = str(call_id) if call_id else f"call-{self.turn_id}-{seq}"
            out.append(self._announce(call_id, name))
        call_id = str(call_id)
        self._unanswered.pop(call_id, None)
        if data.get("status") == "error":
            out.append({"type": "tool-output-error", "toolCallId": call_id, "errorText": f"{name} failed"})
        else:
            out.append({"type": "tool-output-available", "toolCallId": call_id, "output": {}})
        return out

    def _announce(self, call_id: str, name: str) -> Chunk:
        self._announced.add(call_id)
        self._unanswered[call_id] = name
        return {
            "type": "tool-input-available",
            "toolCallId": call_id,
            "toolName": name,
            "input": {},
            "dynamic": True,
            "providerExecuted": True,
        }


def frame(chunk: Chunk) -> bytes:
    """One chunk as a Server-Sent Event (``data:`` only, as the SDK's reader expects)."""
    return b"data: " + msgspec.json.encode(chunk) + b"\n\n"


# -- the request body -------------------------------------------------------------------------------------------


class UIPartIn(msgspec.Struct):
    """A part of a UI message; only ``text`` parts are read, every other field and part type is ignored."""

    type: str
    text: str | None = None


class UIMessageIn(msgspec.Struct):
    role: str
    parts: list[UIPartIn] = msgspec.field(default_factory=list)
    id: str | None = None


class UIChatRequest(msgspec.Struct, rename="camel"):
    """What ``DefaultChatTransport.sendMessages`` posts: the chat id, the whole conversation, why it was sent, and
    the id of the message to regenerate (for ``regenerate-message``). Extra members (its ``body`` option) are
    ignored."""

    messages: list[UIMessageIn]
    id: str | None = None
    trigger: str | None = None
    message_id: str | None = None


def newest_user_text(request: UIChatRequest) -> str:
    """The text of the conversation's last message, which must be the user's: the agent keeps the history, so
    earlier messages are not read. Its text parts are joined by a blank line; other parts (files...) are ignored.
    A ``regenerate-message`` sends that user message again, as a new turn."""
    if request.trigger is not None and request.trigger not in _TRIGGERS:
        raise DomainError("invalid_message", "trigger must be submit-message or regenerate-message")
    last = request.messages[-1] if request.messages else None
    if last is None or last.role != "user":
        raise DomainError("invalid_message", "the last message must be the user's message")
    texts = [part.text for part in last.parts if part.type == "text" and part.text]
    if not texts:
        raise DomainError("invalid_message", "the user's message has no text part")
    return "\n\n".join(texts)
