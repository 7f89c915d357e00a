"""The scripted model's decisions, on hand-made requests and on a real Letta 0.16.8 request body."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from devstack.doubles import scripted_model as sm

LETTA_EXAMPLE = Path(__file__).parents[2] / "devstack" / "doubles" / "letta_request_example.json"

MEMORY_INSERT = {
    "type": "function",
    "function": {
        "name": "memory_insert",
        "parameters": {
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "new_string": {"type": "string"},
                "insert_line": {"type": "integer"},
            },
            "required": ["label", "new_string"],
        },
    },
}
CORE_MEMORY_APPEND = {
    "type": "function",
    "function": {
        "name": "core_memory_append",
        "parameters": {
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "content": {"type": "string"},
                "request_heartbeat": {"type": "boolean"},
            },
            "required": ["label", "content", "request_heartbeat"],
        },
    },
}
ARCHIVAL_INSERT = {
    "type": "function",
    "function": {
        "name": "archival_memory_insert",
        "parameters": {
            "type": "object",
            "properties": {"content": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
            "required": ["content"],
        },
    },
}


def system_prompt(human: str, persona: str = "I am a friendly assistant.") -> str:
    """A system prompt rendered the way letta/schemas/memory.py renders memory blocks."""

    def block(label: str, value: str) -> str:
        return (
            f"<{label}>\n<description>\nThe {label} block.\n</description>\n<metadata>\n"
            f"- chars_current={len(value)}\n- chars_limit=5000\n</metadata>\n<value>\n{value}\n</value>\n</{label}>\n"
        )

    return (
        "<base_instructions>\nYou are a helpful agent.\n</base_instructions>\n\n<memory_blocks>\n"
        "The following memory blocks are currently engaged in your core memory unit:\n\n"
        f"{block('human', human)}\n{block('persona', persona)}\n</memory_blocks>"
    )


def request(*messages: dict[str, Any], human: str = "Name: Ada.", tools: list[Any] | None = None) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": system_prompt(human)}, *messages],
        "tools": [MEMORY_INSERT, ARCHIVAL_INSERT] if tools is None else tools,
    }


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def tool_round(call: sm.ToolCall, status: str = "OK") -> list[dict[str, Any]]:
    """The assistant tool call and the tool message Letta appends after running it."""
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}
        ],
    }
    result = json.dumps({"status": status, "message": "None", "time": "2026-01-01 10:00:00 AM UTC+0000"})
    return [assistant, {"role": "tool", "tool_call_id": call.id, "content": result}]


# --- remembering ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fact"),
    [
        ("Please remember that my dog is called Rex.", "my dog is called Rex"),
        ("REMEMBER: my favourite colour is teal", "my favourite colour is teal"),
        ("remember that I live in Lisbon!", "I live in Lisbon"),
    ],
)
def test_remember_calls_memory_insert_on_the_human_block(text: str, fact: str) -> None:
    reply = sm.decide(request(user(text)))

    assert reply.text is None
    assert reply.tool_call is not None
    assert reply.tool_call.name == "memory_insert"
    assert reply.tool_call.arguments == {"label": "human", "new_string": fact}
    assert reply.finish_reason == "tool_calls"


def test_remember_falls_back_to_core_memory_append_and_fills_required_params() -> None:
    reply = sm.decide(request(user("remember that I like tea"), tools=[CORE_MEMORY_APPEND]))

    assert reply.tool_call is not None
    assert reply.tool_call.name == "core_memory_append"
    assert reply.tool_call.arguments == {"label": "human", "content": "I like tea", "request_heartbeat": True}


def test_strict_schemas_get_every_required_param() -> None:
    strict = copy.deepcopy(MEMORY_INSERT)
    strict["function"]["parameters"]["required"] = ["label", "new_string", "insert_line"]
    strict["function"]["parameters"]["properties"]["insert_line"]["type"] = ["integer", "null"]

    reply = sm.decide(request(user("remember that I like tea"), tools=[strict]))

    assert reply.tool_call is not None
    assert reply.tool_call.arguments == {"label": "human", "new_string": "I like tea", "insert_line": -1}


def test_tool_result_is_acknowledged_without_another_tool_call() -> None:
    first = sm.decide(request(user("remember that my dog is called Rex")))
    assert first.tool_call is not None

    second = sm.decide(request(user("remember that my dog is called Rex"), *tool_round(first.tool_call)))

    assert second.tool_call is None
    assert second.text == "Got it, I will remember that my dog is called Rex."


def test_failed_tool_result_is_reported() -> None:
    first = sm.decide(request(user("remember that my dog is called Rex")))
    assert first.tool_call is not None
    messages = tool_round(first.tool_call, status="Failed")
    messages[1]["content"] = json.dumps({"status": "Failed", "message": "block is read-only", "time": "now"})

    reply = sm.decide(request(user("remember that my dog is called Rex"), *messages))

    assert reply.text == "I could not do that: block is read-only"


def test_remember_without_a_memory_tool_says_so() -> None:
    reply = sm.decide(request(user("remember that I like tea"), tools=[]))

    assert reply.tool_call is None
    assert reply.text == "I have no memory tool, so I cannot remember that I like tea."


def test_tool_call_ids_are_deterministic() -> None:
    body = request(user("remember that I like tea"))
    first, second = sm.decide(body), sm.decide(copy.deepcopy(body))

    assert first.tool_call is not None and second.tool_call is not None
    assert first.tool_call.id == second.tool_call.id
    assert re.fullmatch(r"call_[0-9a-f]{24}", first.tool_call.id)


# --- answering from memory only ---------------------------------------------------------------


def test_question_is_answered_from_the_human_block() -> None:
    body = request(user("What is my dog called?"), human="Name: Ada.\nmy dog is called Rex")

    assert sm.decide(body).text == "From my memory: my dog is called Rex"


def test_question_ignores_the_conversation_history() -> None:
    # The fact is in the history but not in memory: the model must not know it.
    body = request(
        user("remember that my dog is called Rex"),
        {"role": "assistant", "content": "Got it, I will remember that my dog is called Rex."},
        user("What is my dog called?"),
    )

    assert sm.decide(body).text == "I don't know that yet."


def test_newest_matching_line_wins_and_plurals_fold() -> None:
    human = "my favourite colour is red\nmy favourite colour is teal"

    assert sm.decide(request(user("Which colours do I like?"), human=human)).text == (
        "From my memory: my favourite colour is teal"
    )


def test_line_numbered_blocks_are_read_too() -> None:
    blocks = sm.parse_memory_blocks(system_prompt("1→ Name: Ada.\n2→ my dog is called Rex"))

    assert sm.answer_from_memory("what's my dog's name?", blocks) == "From my memory: my dog is called Rex"


def test_a_remember_question_is_a_question() -> None:
    body = request(user("Do you remember that my dog is called Rex?"), human="my dog is called Rex")

    reply = sm.decide(body)
    assert reply.tool_call is None
    assert reply.text == "From my memory: my dog is called Rex"


# --- magic phrases and echo -------------------------------------------------------------------


def test_slow_streams_twenty_words_paced() -> None:
    reply = sm.decide(request(user("tell a story [[slow]]")))

    assert len(reply.text_chunks()) == sm.SLOW_WORDS
    assert reply.chunk_delay_s == pytest.approx(0.1)


def test_long_replies_with_n_words() -> None:
    reply = sm.decide(request(user("[[long 250]]")))

    assert reply.text is not None and len(reply.text.split()) == 250
    assert "".join(reply.text_chunks()) == reply.text


def test_archive_calls_archival_memory_insert_then_acknowledges() -> None:
    first = sm.decide(request(user("[[archive the launch is on Friday]]")))
    assert first.tool_call is not None
    assert first.tool_call.name == "archival_memory_insert"
    assert first.tool_call.arguments == {"content": "the launch is on Friday"}

    second = sm.decide(request(user("[[archive the launch is on Friday]]"), *tool_round(first.tool_call)))
    assert second.text == "Got it, I archived that: the launch is on Friday."


def test_archive_without_the_tool_echoes() -> None:
    reply = sm.decide(request(user("[[archive x]]"), tools=[MEMORY_INSERT]))

    assert reply.text == "You said: [[archive x]]"


def test_statement_is_echoed_and_packed_user_messages_are_unwrapped() -> None:
    packed = json.dumps({"type": "user_message", "message": "hello there", "time": "now"})
    heartbeat = json.dumps({"type": "heartbeat", "reason": "ping", "time": "now"})

    assert sm.decide(request(user(packed), user(heartbeat))).text == "You said: hello there"


def test_content_parts_are_read() -> None:
    body = request({"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "you"}]})

    assert sm.decide(body).text == "You said: hi\nyou"


def test_no_user_message_gets_a_greeting() -> None:
    assert sm.decide({"messages": [{"role": "system", "content": "x"}]}).text == "Hello! How can I help you?"


# --- the real request Letta 0.16.8 sends ------------------------------------------------------


@pytest.fixture(scope="module")
def letta_body() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(LETTA_EXAMPLE.read_text())
    return body


def _with_human(body: dict[str, Any], human: str, *messages: dict[str, Any]) -> dict[str, Any]:
    """The real body with the human block's value replaced and a new conversation tail."""
    system = body["messages"][0]["content"]
    pattern = r"(<human>.*?<value>\n).*?(\n</value>)"
    system = re.sub(pattern, lambda m: m.group(1) + human + m.group(2), system, count=1, flags=re.S)
    return {**body, "messages": [{"role": "system", "content": system}, *messages]}


def test_real_letta_body_memory_blocks_are_parsed(letta_body: dict[str, Any]) -> None:
    blocks = sm.parse_memory_blocks(sm.system_text(letta_body["messages"]))

    assert {"human", "persona"} <= set(blocks)
    assert blocks["human"].strip() and "<" not in blocks["human"]
    assert {"memory_insert", "archival_memory_insert"} <= set(sm.offered_tools(letta_body))


def test_real_letta_body_gets_a_deterministic_reply(letta_body: dict[str, Any]) -> None:
    reply = sm.decide(letta_body)

    assert reply == sm.decide(copy.deepcopy(letta_body))
    if letta_body["messages"][-1]["role"] == "tool":  # the example ends right after a tool ran
        assert reply.tool_call is None and reply.text and reply.text.startswith("Got it")


def test_real_letta_body_full_memory_round_trip(letta_body: dict[str, Any]) -> None:
    # 1. "remember that" -> memory_insert with Letta's real schema.
    ask = user("remember that my dog is called Rex")
    first = sm.decide(_with_human(letta_body, "Name: Test User One.", ask))
    assert first.tool_call is not None and first.tool_call.name == "memory_insert"
    assert first.tool_call.arguments == {"label": "human", "new_string": "my dog is called Rex"}

    # 2. Letta ran the tool -> acknowledge.
    second = sm.decide(_with_human(letta_body, "Name: Test User One.", ask, *tool_round(first.tool_call)))
    assert second.text == "Got it, I will remember that my dog is called Rex."

    # 3. A new conversation: only the memory block (updated by Letta) carries the fact.
    question = user("What is my dog called?")
    remembered = _with_human(letta_body, "Name: Test User One.\nmy dog is called Rex", question)
    assert sm.decide(remembered).text == "From my memory: my dog is called Rex"
    forgotten = _with_human(letta_body, "Name: Test User One.", question)
    assert sm.decide(forgotten).text == "I don't know that yet."


# --- Letta's summarization request -----------------------------------------------------------

LETTA_SITE_PACKAGES = Path(__file__).parents[2] / ".devstack" / "letta-venv" / "lib"
LETTA_PROMPT_FILES = sorted(LETTA_SITE_PACKAGES.glob("python3*/site-packages/letta/prompts/summarizer_prompt.py"))
# letta/prompts/summarizer_prompt.py SLIDING_PROMPT (SLIDING_WORD_LIMIT = 300), verbatim: the system
# message of the default ("sliding_window") compaction of Letta 0.16.8's letta_v1_agent.
LETTA_SLIDING_PROMPT = (
    "The following messages are being evicted from the BEGINNING of your context window. Write a detailed"
    " summary that captures what happened in these messages to appear BEFORE the remaining recent "
    "messages in context, providing background for what comes after. Include the following sections:\n"
    "\n"
    "1.**High level goals**: What is the high level goal and ongoing task? Capture the user's explicit "
    "requests and intent in detail. If there is an existing summary in the transcript, make sure to take "
    "it into consideration to continue tracking the higher level goals and long-term progress.\n"
    "\n"
    "2. **What happened**: The conversations, tasks, and exchanges that took place. What did the user ask"
    " for? What did you do? How did things progress? If there is a previous summary being evicted, please"
    " extract a concise version of the critical info from it.\n"
    "\n"
    "3. **Important details**: Enumerate specific files and code sections examined, modified, or created,"
    " as well as important plan files, GitHub issues/PR links, and Linear ticket IDs. For each item, "
    "include why it matters and any relevant names, data, configs, or facts discussed.\n"
    "   - **Preserve identifiers verbatim** (plan filename/path, exact URL, issue/PR number, ticket ID); "
    "do not paraphrase or truncate.\n"
    "   - **Preserve referenced identifiers unless explicitly resolved**: Keep exact URLs/IDs from the "
    "conversation unless there is clear evidence they are no longer relevant.\n"
    "   - Do not omit details likely to be referenced later.\n"
    "\n"
    "4. **Errors and fixes**: List all errors that you ran into, and how you fixed them. Pay special "
    "attention to specific user feedback that you received and record verbatim if useful.\n"
    "\n"
    "5. **Lookup hints**: For any detailed content (long lists, extensive data, specific conversations) "
    "that couldn't fit in the summary, note the topic and key terms that could be used to find it in "
    "message history later.\n"
    "\n"
    "Write in first person as a factual record of what occurred. Be thorough and detailed - the goal is "
    "to preserve enough context that the recent messages make sense and important information isn't lost "
    "to prevent duplicate work or repeated mistakes.\n"
    "\n"
    "Keep your summary under 300 words. Only output the summary."
)
LETTA_USER_ID = "user-00000000-0000-4000-8000-000000000000"


def letta_summary_alert(summary: str) -> str:
    """letta/system.py package_summarize_message_no_counts: how an earlier summary sits in context."""
    message = (
        "Note: prior messages from the beginning of the conversation have been hidden from view due to "
        f"conversation memory constraints.\nThe following is a summary of the previous messages:\n {summary}"
    )
    return json.dumps({"type": "system_alert", "message": message, "time": "2026-11-30 06:35:12 AM UTC+0000"}, indent=2)


def letta_transcript(*lines: str) -> str:
    """summarizer.py simple_formatter: one "[role] text" line per message (user and tool roles print as
    "MessageRole.user" / "MessageRole.tool", an f-string of Letta's enum)."""
    return "<start_transcript>\n" + "\n".join(lines) + "\n<end_transcript>\n. Generate the summary."


def letta_summary_request(system_prompt: str, transcript: str) -> dict[str, Any]:
    """The body simple_summary sends through OpenAIClient.build_request_data(letta_v1_agent, tools=[]),
    as captured from Letta 0.16.8 itself."""
    return {
        "model": "gpt-4o-mini",
        "messages": [{"content": system_prompt, "role": "system"}, {"content": transcript, "role": "user"}],
        "max_completion_tokens": None,
        "temperature": 1.0,
        "user": LETTA_USER_ID,
        "tools": None,
        "tool_choice": None,
    }


MISO_TRANSCRIPT = letta_transcript(
    f"[user] {letta_summary_alert('I greeted the user.')}",
    "[MessageRole.user] remember that my cat is Miso",
    '[assistant] -> memory_insert({"label": "human", "new_string": "my cat is Miso"})',
    '[MessageRole.tool] {"status": "OK", "message": "None", "time": "2026-11-30 06:35:12 AM UTC+0000"}',
    "[assistant] Got it, I will remember that my cat is Miso.",
    "[MessageRole.user] [[long 400]]",
    "[assistant] " + " ".join(f"word{i}" for i in range(1, 401)),
    "[MessageRole.user] What is my cat called?",
    "[assistant] From my memory: my cat is Miso",
)


def test_letta_sliding_window_summary_request_gets_a_short_summary() -> None:
    body = letta_summary_request(LETTA_SLIDING_PROMPT, MISO_TRANSCRIPT)

    reply = sm.decide(body)

    assert reply.tool_call is None and reply.finish_reason == "stop"
    assert reply.text == (
        "Summary of 9 earlier messages: 3 from the user, 4 from me. It continues an earlier summary. "
        'I used memory_insert. The user first said "remember that my cat is Miso" and last said '
        '"What is my cat called?".'
    )
    assert len(reply.text.split()) < 100  # SLIDING_WORD_LIMIT is 300, the legacy WORD_LIMIT 100
    assert reply == sm.decide(copy.deepcopy(body))


def test_summary_of_long_replies_does_not_echo_them() -> None:
    # The failure this fixes: "[[long N]]" in the transcript made the model answer N words.
    transcript = letta_transcript("[MessageRole.user] [[long 3000]]", "[assistant] word1 word2")

    reply = sm.decide(letta_summary_request(LETTA_SLIDING_PROMPT, transcript))

    assert reply.text == "Summary of 2 earlier messages: 1 from the user, 1 from me."
    assert sm.completion_tokens(reply) < 20


def test_a_transcript_is_summarized_whatever_the_compaction_prompt() -> None:
    # CompactionSettings.prompt may replace Letta's prompt; simple_formatter's framing stays.
    body = letta_summary_request("Summarize tersely.", letta_transcript("[MessageRole.user] hello there"))

    assert (
        sm.decide(body).text
        == 'Summary of 1 earlier message: 1 from the user, 0 from me. The user first said "hello there".'
    )


def test_long_user_words_are_quoted_short() -> None:
    words = " ".join(f"w{i}" for i in range(40))
    body = letta_summary_request(LETTA_SLIDING_PROMPT, letta_transcript(f"[MessageRole.user] {words}"))

    reply = sm.decide(body)

    assert reply.text is not None and reply.text.endswith('"w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11...".')
    blob = letta_transcript(f"[MessageRole.user] {'x' * 5000}")
    assert len(sm.decide(letta_summary_request(LETTA_SLIDING_PROMPT, blob)).text or "") < 200


def test_self_compaction_request_is_summarized_without_tools() -> None:
    # self_summarizer.py: the agent's own request, then a dummy assistant turn and the prompt as the last
    # user message; the agent's tools stay offered (cache compatibility) but must not be called.
    prompt = "The previous messages are being evicted from the BEGINNING of your context window. Write..."
    body = request(
        user("remember that my dog is called Rex"),
        {"role": "assistant", "content": "Got it, I will remember that my dog is called Rex."},
        user("[[slow]]"),
        {"role": "assistant", "content": "I understand. Let me summarize."},
        user(prompt),
    )

    reply = sm.decide(body)

    assert reply.tool_call is None
    assert reply.text == (
        'Summary of 3 earlier messages: 2 from the user, 1 from me. The user first said "remember that my dog is '
        'called Rex".'
    )


def test_asking_for_a_summary_in_chat_is_not_letta_compaction() -> None:
    reply = sm.decide(request(user("Keep your summary under 10 words. Only output the summary.")))

    assert reply.text == "You said: Keep your summary under 10 words. Only output the summary."


@pytest.mark.skipif(not LETTA_PROMPT_FILES, reason="Letta 0.16.8 is not installed in .devstack/letta-venv")
def test_every_letta_summarizer_prompt_is_recognised() -> None:
    prompts: dict[str, Any] = {}
    exec(LETTA_PROMPT_FILES[0].read_text(), prompts)  # constants only: no imports
    legacy: dict[str, Any] = {}
    exec((LETTA_PROMPT_FILES[0].parent / "gpt_summarize.py").read_text(), legacy)
    assert prompts["SLIDING_PROMPT"] == LETTA_SLIDING_PROMPT

    # simple_summary ("sliding_window", "all" and the fallbacks): the prompt is the system message.
    for name in ("SLIDING_PROMPT", "ALL_PROMPT", "SHORTER_SUMMARY_PROMPT"):
        system = prompts[name]
        assert sm.is_summary_request(letta_summary_request(system, "no transcript")["messages"]), name
    assert sm.is_summary_request([{"role": "system", "content": legacy["SYSTEM"]}, user("[user] hi")])
    # self_summarizer ("self_compact_*"): the prompt is the last user message.
    ack = {"role": "assistant", "content": "I understand. Let me summarize."}
    for name in ("SELF_SLIDING_PROMPT", "SELF_ALL_PROMPT"):
        reply = sm.decide(request(user("hi"), ack, user(prompts[name])))
        assert reply.text == 'Summary of 1 earlier message: 1 from the user, 0 from me. The user first said "hi".', name


# --- tokens and embeddings --------------------------------------------------------------------


def test_token_counting_is_four_characters_per_token() -> None:
    assert sm.count_tokens("") == 0
    assert sm.count_tokens("abcd") == 1
    assert sm.count_tokens("abcde") == 2
    body = {"messages": [user("abcd")]}
    assert sm.prompt_tokens(body) == 3 + 3 + 1
    assert sm.completion_tokens(sm.Reply(text="You said: abcd")) == 4


def test_prompt_tokens_count_tools_and_tool_calls() -> None:
    plain = sm.prompt_tokens(request(user("hi"), tools=[]))
    with_tools = sm.prompt_tokens(request(user("hi")))

    assert with_tools > plain


def test_embeddings_are_deterministic_unit_vectors() -> None:
    first = sm.embed("my dog is called Rex")

    assert len(first) == sm.EMBEDDING_DIMS
    assert math.isclose(math.fsum(v * v for v in first), 1.0, rel_tol=1e-9)
    assert first == sm.embed("my dog is called Rex")
    assert first != sm.embed("my cat is called Tom")


def test_embeddings_of_texts_sharing_words_are_closer() -> None:
    def cosine(a: list[float], b: list[float]) -> float:
        return math.fsum(x * y for x, y in zip(a, b, strict=True))

    dog = sm.embed("my dog is called Rex")
    assert cosine(dog, sm.embed("what is the dog called?")) > cosine(dog, sm.embed("quarterly revenue report"))


def test_embedding_inputs() -> None:
    assert sm.embedding_inputs("a") == ["a"]
    assert sm.embedding_inputs(["a", "b"]) == ["a", "b"]
    assert sm.embedding_inputs([1, 2, 3]) == ["[1, 2, 3]"]
