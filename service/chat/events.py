"""Letta's stream events as chat events, and how a turn's outcome is decided. Pure: no I/O.

A chat event is ``(name, data)``: ``turn``, ``delta``, ``tool``, ``usage``, ``error`` and ``done`` (README,
"Events"). An ``error`` event carries its ``code`` here; the web edge adds the sentence users read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.agents.spec import READ_ONLY_TOOLS
from service.clients.letta_stream import LettaEvent, text_of

Event = tuple[str, dict[str, Any]]

# Letta stop reasons that end a turn normally.
OK_STOPS = frozenset({"end_turn", "max_steps", "no_tool_call", "requires_approval"})


@dataclass
class TurnResult:
    """What a turn produced so far; its ``status`` is ``pending`` until ``finish`` decides it."""

    status: str = "pending"  # complete | failed | cancelled
    content: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    run_id: str | None = None
    letta_message_id: str | None = None
    stop_reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None  # the upstream's words, for the logs and the database only
    memory_edited: bool = False  # a tool that can edit the memory blocks was called (or may have been: a recovery)
    compiled_memory_version: int | None = None  # the memory version the thread's conversation was compiled at

    @property
    def text(self) -> str:
        return "".join(self.content)

    @property
    def memory_may_have_changed(self) -> bool:
        """Whether the agent's memory blocks may differ after this turn: a tool that can edit them was called, or the
        turn did not end cleanly (a tool may have run after the last event seen)."""
        return self.memory_edited or self.status != "complete"

    def fail(self, code: str, message: str) -> None:
        self.status, self.error_code, self.error_message = "failed", code, message


def error_code(text: str) -> str:
    """The code of a failure described by Letta's or LiteLLM's words."""
    lowered = text.lower()
    # LiteLLM 1.106.2 rejects over-budget calls with type budget_exceeded ("ExceededBudget: ..."), HTTP 422.
    if any(marker in lowered for marker in ("budget_exceeded", "budget has been exceeded", "exceededbudget")):
        return "budget_exceeded"
    if "llm" in lowered or "api" in lowered:
        return "llm_error"
    return "agent_error"


def upstream_failure_code(message: str, status: int | None) -> str:
    """The code of a turn whose Letta stream raised: an in-stream error event (HTTP 200, the agent's failure)
    keeps its own code; a lost connection (no status) or a Letta 5xx is ``agent_unavailable``."""
    code = error_code(message)
    if code == "budget_exceeded":
        return code
    if status is None or status >= 500:
        return "agent_unavailable"
    return code


def apply(result: TurnResult, event: LettaEvent) -> Event | None:
    """Record one Letta event in ``result``; returns the chat event it becomes, if any."""
    kind = event.message_type
    if event.run_id and result.run_id is None:
        result.run_id = event.run_id
    if kind == "assistant_message":
        text = text_of(event.content)
        if text:
            result.content.append(text)
            result.letta_message_id = event.id
            return "delta", {"text": text}
    elif kind == "tool_call_message":
        calls = event.tool_calls
        call = event.tool_call or (calls[0] if isinstance(calls, list) and calls else calls)
        name = getattr(call, "name", None)
        if name:  # token streaming repeats the call in fragments; the first names it
            if name not in READ_ONLY_TOOLS:
                result.memory_edited = True
            return "tool", {"phase": "call", "name": name, "id": getattr(call, "tool_call_id", None)}
    elif kind == "tool_return_message":
        return "tool", {"phase": "return", "name": event.name, "status": event.status, "id": event.tool_call_id}
    elif kind == "usage_statistics":
        result.prompt_tokens += event.prompt_tokens or 0
        result.completion_tokens += event.completion_tokens or 0
        result.total_tokens += event.total_tokens or 0
        return "usage", {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.total_tokens,
        }
    elif kind == "stop_reason":
        result.stop_reason = event.stop_reason
    elif kind == "error_message":
        result.error_code = error_code(f"{event.error_type} {event.message} {event.detail or ''}")
        result.error_message = event.message
    return None


def settle(result: TurnResult, *, cancelled: bool) -> None:
    """Decide the outcome of a stream that ended (at ``[DONE]`` or by closing)."""
    if cancelled or result.stop_reason == "cancelled":
        result.status = "cancelled"
    elif result.stop_reason in OK_STOPS and result.error_code is None:
        result.status = "complete"
    else:
        stop = result.stop_reason
        result.fail(
            result.error_code or error_code(stop or ""),
            result.error_message or f"the agent stopped: {stop or 'stream ended early'}",
        )


def done_event(
    result: TurnResult, turn_id: str, user_message_id: str, message_id: str | None, cost: float | None
) -> Event:
    return "done", {
        "turn_id": turn_id,
        "status": result.status,
        "user_message_id": user_message_id,
        "message_id": message_id,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.total_tokens,
        "cost": cost,
        "run_id": result.run_id,
    }
