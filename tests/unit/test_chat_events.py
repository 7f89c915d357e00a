"""How a chat turn's Letta events become chat events and decide the turn's outcome (service/chat/events.py).

Pure: ``LettaEvent``s built here (or decoded from Letta 0.16.8's wire shapes), no sockets, no Postgres."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from service.chat import events
from service.chat.events import TurnResult
from service.chat.export import markdown_text
from service.clients.letta_stream import ContentPart, LettaEvent, ToolCall

RUN = "run-5f0c5b1e"

# What LiteLLM says when a user is over budget, as it reaches Letta's error event or the stream's error.
PROXY_BUDGET = "ExceededBudget: User=7f9c2a4e over budget. Spend=10.2, Budget=10.0"  # auth_checks, HTTP 422
ROUTER_BUDGET = "Budget has been exceeded! Current cost: 10.2, Max budget: 10.0"  # BudgetExceededError
TYPE_BUDGET = '{"error": {"message": "over", "type": "budget_exceeded", "param": null, "code": "400"}}'


def delta(text: str | list[ContentPart] | None, message_id: str = "message-1", run_id: str | None = RUN) -> LettaEvent:
    return LettaEvent(message_type="assistant_message", id=message_id, run_id=run_id, content=text)


def stop(reason: str | None) -> LettaEvent:
    return LettaEvent(message_type="stop_reason", stop_reason=reason)


def usage(prompt: int | None, completion: int | None, total: int | None) -> LettaEvent:
    return LettaEvent(
        message_type="usage_statistics", prompt_tokens=prompt, completion_tokens=completion, total_tokens=total
    )


def error_message(error_type: str, message: str, detail: str | None = None) -> LettaEvent:
    return LettaEvent(message_type="error_message", run_id=RUN, error_type=error_type, message=message, detail=detail)


def applied(result: TurnResult, *letta_events: LettaEvent) -> list[events.Event | None]:
    return [events.apply(result, event) for event in letta_events]


def settled(*letta_events: LettaEvent, cancelled: bool = False) -> TurnResult:
    result = TurnResult()
    applied(result, *letta_events)
    events.settle(result, cancelled=cancelled)
    return result


# -- apply: deltas, run id, tools, usage ----------------------------------------------------------------


def test_deltas_become_delta_events_and_accumulate_into_the_text() -> None:
    result = TurnResult()
    assert applied(result, delta("Hel"), delta("lo"), delta(" there", message_id="message-2")) == [
        ("delta", {"text": "Hel"}),
        ("delta", {"text": "lo"}),
        ("delta", {"text": " there"}),
    ]
    assert result.text == "Hello there"
    assert result.content == ["Hel", "lo", " there"]
    assert result.letta_message_id == "message-2"  # the message the reply's last text came in
    assert result.status == "pending"  # apply never decides the outcome


def test_a_delta_of_content_parts_is_their_text_joined() -> None:
    result = TurnResult()
    parts = [ContentPart(text="Hi"), ContentPart(text=None), ContentPart(text=" you")]
    assert events.apply(result, delta(parts)) == ("delta", {"text": "Hi you"})
    assert result.text == "Hi you"


@pytest.mark.parametrize(
    "content", ["", None, [], [ContentPart(text=None)]], ids=["empty", "none", "no-parts", "blank"]
)
def test_an_assistant_message_without_text_is_no_event_and_not_the_reply(content: Any) -> None:
    result = TurnResult()
    events.apply(result, delta("kept", message_id="message-1"))
    assert events.apply(result, delta(content, message_id="message-2")) is None
    assert result.content == ["kept"] and result.letta_message_id == "message-1"


def test_the_run_id_is_the_first_one_seen_whatever_the_event() -> None:
    result = TurnResult()
    ping = LettaEvent(message_type="ping", run_id=None)
    reasoning = LettaEvent(message_type="reasoning_message", run_id="run-first", content="thinking")
    applied(result, ping, delta("a", run_id=None))
    assert result.run_id is None
    # An event that is no chat event still carries the run id.
    assert events.apply(result, reasoning) is None
    applied(result, delta("b", run_id="run-later"), stop("end_turn"))
    assert result.run_id == "run-first"


def test_a_tool_call_is_a_tool_event_naming_the_call() -> None:
    call = LettaEvent(
        message_type="tool_call_message",
        run_id=RUN,
        tool_call=ToolCall(name="memory_insert", arguments='{"label": "human"}', tool_call_id="call_1"),
    )
    result = TurnResult()
    assert events.apply(result, call) == ("tool", {"phase": "call", "name": "memory_insert", "id": "call_1"})
    assert result.text == "" and result.run_id == RUN


def test_a_tool_call_in_tool_calls_list_or_single_delta() -> None:
    listed = LettaEvent(
        message_type="tool_call_message",
        tool_calls=[ToolCall(name="web_search", tool_call_id="call_2"), ToolCall(name="other", tool_call_id="call_3")],
    )
    single = LettaEvent(message_type="tool_call_message", tool_calls=ToolCall(name="send", tool_call_id="call_4"))
    both = LettaEvent(
        message_type="tool_call_message",
        tool_call=ToolCall(name="preferred", tool_call_id="call_5"),
        tool_calls=[ToolCall(name="ignored", tool_call_id="call_6")],
    )
    result = TurnResult()
    assert applied(result, listed, single, both) == [
        ("tool", {"phase": "call", "name": "web_search", "id": "call_2"}),
        ("tool", {"phase": "call", "name": "send", "id": "call_4"}),
        ("tool", {"phase": "call", "name": "preferred", "id": "call_5"}),
    ]


def test_tool_call_fragments_without_a_name_are_no_events() -> None:
    # Token streaming repeats the call in fragments: only the first names it.
    fragments = [
        LettaEvent(message_type="tool_call_message", tool_call=ToolCall(arguments='{"la', tool_call_id="call_1")),
        LettaEvent(message_type="tool_call_message", tool_calls=ToolCall(arguments='bel"}')),
        LettaEvent(message_type="tool_call_message", tool_calls=[]),
        LettaEvent(message_type="tool_call_message"),
    ]
    assert applied(TurnResult(), *fragments) == [None, None, None, None]


def named_call(name: str, call_id: str = "call_1") -> LettaEvent:
    return LettaEvent(message_type="tool_call_message", tool_call=ToolCall(name=name, tool_call_id=call_id))


@pytest.mark.parametrize(
    "tool", ["memory_insert", "memory_replace", "core_memory_append", "memory_rethink", "archival_memory_insert", "x"]
)
def test_a_call_of_a_tool_that_may_edit_memory_marks_the_turn(tool: str) -> None:
    # Any tool but the read-only ones (an unknown one too): its turn bumps the memory version, so that every thread's
    # conversation is recompiled before its next turn.
    result = TurnResult()
    applied(result, named_call("conversation_search"), named_call(tool, "call_2"))
    assert result.memory_edited
    result.status = "complete"
    assert result.memory_may_have_changed


def test_read_only_tools_and_nameless_fragments_leave_the_memory_unchanged() -> None:
    result = TurnResult()
    applied(
        result,
        named_call("conversation_search"),
        named_call("archival_memory_search", "call_2"),
        LettaEvent(message_type="tool_call_message", tool_call=ToolCall(arguments='{"label": "human"}')),
        LettaEvent(message_type="tool_return_message", name="memory_insert", status="success", tool_call_id="call_3"),
        delta("Done."),
        stop("end_turn"),
    )
    events.settle(result, cancelled=False)
    assert result.status == "complete"
    assert not result.memory_edited and not result.memory_may_have_changed


@pytest.mark.parametrize("status", ["pending", "failed", "cancelled"])
def test_a_turn_that_did_not_end_cleanly_may_have_changed_the_memory(status: str) -> None:
    # Its events may not all have been seen: a memory tool may have run after the last one.
    assert TurnResult(status=status).memory_may_have_changed
    assert not TurnResult(status="complete").memory_may_have_changed


def test_a_tool_return_is_a_tool_event_with_its_status() -> None:
    returned = LettaEvent(
        message_type="tool_return_message",
        name="memory_insert",
        status="error",
        tool_call_id="call_1",
        tool_return="Traceback ...",
    )
    result = TurnResult()
    assert events.apply(result, returned) == (
        "tool",
        {"phase": "return", "name": "memory_insert", "status": "error", "id": "call_1"},
    )
    assert result.text == ""  # what a tool returned is not the reply


def test_usage_is_summed_across_usage_statistics_events() -> None:
    result = TurnResult()
    first, second = applied(result, usage(1000, 40, 1040), usage(1200, 16, 1216))
    assert first == ("usage", {"prompt_tokens": 1000, "completion_tokens": 40, "total_tokens": 1040})
    assert second == ("usage", {"prompt_tokens": 2200, "completion_tokens": 56, "total_tokens": 2256})
    assert (result.prompt_tokens, result.completion_tokens, result.total_tokens) == (2200, 56, 2256)


def test_usage_fields_left_out_count_as_zero() -> None:
    result = TurnResult()
    assert events.apply(result, usage(None, 7, None)) == (
        "usage",
        {"prompt_tokens": 0, "completion_tokens": 7, "total_tokens": 0},
    )


def test_stop_reasons_and_error_messages_are_recorded_but_are_no_chat_events() -> None:
    result = TurnResult()
    assert events.apply(result, stop("max_steps")) is None
    assert result.stop_reason == "max_steps"
    assert events.apply(result, error_message("llm_error", "An error occurred with the LLM request.")) is None
    assert (result.error_code, result.error_message) == ("llm_error", "An error occurred with the LLM request.")
    assert result.status == "pending"


def test_an_unknown_message_type_changes_nothing() -> None:
    result = TurnResult()
    assert events.apply(result, LettaEvent(message_type="hidden_reasoning_message", content="secret")) is None
    assert result == TurnResult()


# -- settle: the outcome ------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["end_turn", "max_steps", "no_tool_call", "requires_approval"])
def test_a_normal_stop_completes_the_turn(reason: str) -> None:
    result = settled(delta("Hi"), stop(reason), usage(10, 1, 11))
    assert result.status == "complete"
    assert (result.error_code, result.error_message) == (None, None)
    assert result.text == "Hi"


def test_a_cancelled_stop_reason_is_a_cancelled_turn() -> None:
    result = settled(delta("Once upon"), stop("cancelled"))
    assert result.status == "cancelled" and result.error_code is None
    assert result.text == "Once upon"  # what was streamed is kept as the cancelled reply


@pytest.mark.parametrize(
    "letta_events",
    [
        [stop("end_turn")],
        [],
        [error_message("llm_error", "An error occurred with the LLM request."), stop("llm_api_error")],
    ],
    ids=["completed", "no-stop", "error"],
)
def test_a_cancel_requested_here_wins_whatever_the_stream_said(letta_events: list[LettaEvent]) -> None:
    result = settled(delta("part"), *letta_events, cancelled=True)
    assert result.status == "cancelled"


def test_an_error_message_event_fails_the_turn_with_its_code_and_words() -> None:
    result = settled(
        delta("Par"),
        stop("llm_api_error"),
        error_message("llm_error", "An error occurred with the LLM request.", "Connection reset by peer"),
    )
    assert result.status == "failed"
    assert result.error_code == "llm_error"
    assert result.error_message == "An error occurred with the LLM request."
    assert result.text == "Par"


def test_an_error_message_fails_the_turn_even_after_a_normal_stop_reason() -> None:
    result = settled(stop("end_turn"), error_message("internal_error", "Tool execution crashed"))
    assert (result.status, result.error_code, result.error_message) == (
        "failed",
        "agent_error",
        "Tool execution crashed",
    )


@pytest.mark.parametrize("detail", [PROXY_BUDGET, ROUTER_BUDGET], ids=["proxy", "router"])
def test_an_error_message_about_the_budget_is_budget_exceeded(detail: str) -> None:
    # Letta 0.16.8 puts LiteLLM's words in the error event's detail; its type says llm_error.
    result = settled(
        stop("llm_api_error"), error_message("llm_error", "An error occurred with the LLM request.", detail)
    )
    assert (result.status, result.error_code) == ("failed", "budget_exceeded")


def test_a_stream_that_ended_without_a_stop_reason_fails() -> None:
    result = settled(delta("Half a rep"), usage(5, 2, 7))
    assert result.status == "failed"
    assert result.error_code == "agent_error"
    assert result.error_message == "the agent stopped: stream ended early"
    assert result.text == "Half a rep" and result.total_tokens == 7  # kept for storing and billing


@pytest.mark.parametrize(
    ("reason", "code"),
    [("llm_api_error", "llm_error"), ("invalid_tool_call", "agent_error"), ("error", "agent_error")],
)
def test_an_abnormal_stop_reason_fails_with_a_code_from_its_name(reason: str, code: str) -> None:
    result = settled(stop(reason))
    assert (result.status, result.error_code, result.error_message) == (
        "failed",
        code,
        f"the agent stopped: {reason}",
    )


def test_fail_records_the_code_and_the_message() -> None:
    result = TurnResult()
    result.fail("agent_timeout", "no answer in 120 s")
    assert (result.status, result.error_code, result.error_message) == ("failed", "agent_timeout", "no answer in 120 s")


# -- failure codes from words -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        PROXY_BUDGET,
        ROUTER_BUDGET,
        TYPE_BUDGET,
        "EXCEEDEDBUDGET: user over budget",
        "llm_error An LLM call failed: Budget has been exceeded!",  # the budget wins over the LLM's failure
    ],
    ids=["proxy", "router", "type", "upper-case", "with-llm-words"],
)
def test_litellms_budget_wordings_are_budget_exceeded(text: str) -> None:
    assert events.error_code(text) == "budget_exceeded"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("llm_error An error occurred with the LLM request.", "llm_error"),
        ("OpenAI API returned 500", "llm_error"),
        ("RateLimitError from the provider's Api", "llm_error"),
        ("internal_error Tool execution crashed", "agent_error"),
        ("the budget is fine", "agent_error"),
        ("", "agent_error"),
    ],
)
def test_other_failures_are_llm_or_agent_errors(text: str, code: str) -> None:
    assert events.error_code(text) == code


@pytest.mark.parametrize("status", [None, 200, 422, 500, 503])
@pytest.mark.parametrize("words", [PROXY_BUDGET, ROUTER_BUDGET], ids=["proxy", "router"])
def test_a_budget_failure_is_budget_exceeded_whatever_the_status(words: str, status: int | None) -> None:
    assert events.upstream_failure_code(f"HTTP {status}: {words}", status) == "budget_exceeded"


@pytest.mark.parametrize(
    ("message", "status", "code"),
    [
        ("ReadError: connection reset", None, "agent_unavailable"),  # the connection broke
        ("HTTP 500: LLM request failed", 500, "agent_unavailable"),  # Letta itself failed
        ("HTTP 502: bad gateway", 502, "agent_unavailable"),
        ("HTTP 200: An error occurred with the LLM request.", 200, "llm_error"),  # Letta's in-stream error
        ('HTTP 200: {"error": "Stream was terminated", "code": "INTERNAL_SERVER_ERROR"}', 200, "agent_error"),
        ("HTTP 499: LLM request cancelled", 499, "llm_error"),
        ("HTTP 409: agent busy", 409, "agent_error"),
    ],
)
def test_an_upstream_failure_is_unavailable_only_without_a_status_or_on_a_5xx(
    message: str, status: int | None, code: str
) -> None:
    assert events.upstream_failure_code(message, status) == code


# -- text_of and done ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("plain", "plain"),
        ([ContentPart(text="a"), ContentPart(text="b")], "ab"),
        ([ContentPart(text=None), ContentPart(text="b")], "b"),
        ([object(), ContentPart(text="c")], "c"),  # a part without text
        ([], ""),
        (None, ""),
        (42, ""),
        ({"text": "not a part list"}, ""),
    ],
    ids=["str", "parts", "none-part", "foreign-part", "no-parts", "none", "int", "dict"],
)
def test_text_of(content: Any, text: str) -> None:
    assert events.text_of(content) == text


def test_the_done_event_reports_the_outcome_usage_cost_and_run() -> None:
    result = settled(delta("Hi", run_id="run-9"), stop("end_turn"), usage(800, 20, 820))
    assert events.done_event(result, "turn-1", "user-message-1", "message-2", 0.00084) == (
        "done",
        {
            "turn_id": "turn-1",
            "status": "complete",
            "user_message_id": "user-message-1",
            "message_id": "message-2",
            "prompt_tokens": 800,
            "completion_tokens": 20,
            "total_tokens": 820,
            "cost": 0.00084,
            "run_id": "run-9",
        },
    )


def test_the_done_event_of_a_failed_turn_without_a_stored_reply() -> None:
    result = settled()
    name, data = events.done_event(result, "turn-2", "user-message-2", None, None)
    assert name == "done"
    assert data["status"] == "failed" and data["message_id"] is None and data["cost"] is None
    assert data["run_id"] is None and data["total_tokens"] == 0


# -- a whole turn, from Letta 0.16.8's wire shapes ----------------------------------------------------


def letta(**event: Any) -> LettaEvent:
    """An event as Letta sends it, decoded as the service decodes its stream."""
    return msgspec.json.decode(msgspec.json.encode(event), type=LettaEvent)


def test_a_whole_turn_as_letta_streams_it() -> None:
    common = {"date": "2025-11-21T13:00:00+00:00", "otid": None, "sender_id": None, "is_err": None, "run_id": RUN}
    stream = [
        letta(message_type="ping", id="ping-1", seq_id=0, **common),
        letta(message_type="reasoning_message", id="message-r", seq_id=1, reasoning="The user likes tea", **common),
        letta(
            message_type="tool_call_message",
            id="message-aa",
            seq_id=2,
            tool_call={"name": "memory_insert", "arguments": '{"label": "human"}', "tool_call_id": "call_1"},
            tool_calls=None,
            **common,
        ),
        letta(
            message_type="tool_return_message",
            id="message-bb",
            seq_id=3,
            tool_return="None",
            status="success",
            tool_call_id="call_1",
            name="memory_insert",
            stdout=None,
            **common,
        ),
        *(
            letta(message_type="assistant_message", id="message-cc", seq_id=4 + i, content=text, **common)
            for i, text in enumerate(["Noted", ", you like", " tea."])
        ),
        letta(message_type="stop_reason", stop_reason="end_turn"),
        letta(
            message_type="usage_statistics",
            completion_tokens=56,
            prompt_tokens=1234,
            total_tokens=1290,
            step_count=2,
            run_ids=[RUN],
        ),
    ]
    result = TurnResult()
    chat = [event for event in applied(result, *stream) if event is not None]
    events.settle(result, cancelled=False)
    assert chat == [
        ("tool", {"phase": "call", "name": "memory_insert", "id": "call_1"}),
        ("tool", {"phase": "return", "name": "memory_insert", "status": "success", "id": "call_1"}),
        ("delta", {"text": "Noted"}),
        ("delta", {"text": ", you like"}),
        ("delta", {"text": " tea."}),
        ("usage", {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}),
    ]
    assert (result.status, result.text, result.run_id, result.letta_message_id) == (
        "complete",
        "Noted, you like tea.",
        RUN,
        "message-cc",
    )
    assert (result.stop_reason, result.total_tokens) == ("end_turn", 1290)


@pytest.mark.parametrize(
    ("content", "escaped"),
    [
        ("\n\n### Assistant · 2026-11-30 10:00:00\n\nforged", "\n\n\\### Assistant · 2026-11-30 10:00:00\n\nforged"),
        ("# title", "\\# title"),
        ("  ## indented", "  \\## indented"),
        ("text\n---", "text\n\\---"),
        ("text\n===", "text\n\\==="),
        ("a # in the middle stays", "a # in the middle stays"),
        ("    # code block stays", "    # code block stays"),
    ],
)
def test_the_markdown_export_escapes_what_would_forge_its_headings(content: str, escaped: str) -> None:
    assert markdown_text(content) == escaped
