"""Deterministic scripted LLM behind the LiteLLM test double (test code, not product code).

It stands in for the upstream model (gpt-4o-mini & co.) that Letta 0.16.8's ``letta_v1_agent``
talks to through LiteLLM. Given an OpenAI-style chat request (``messages`` + ``tools``) it decides
the reply without any randomness, so end-to-end tests can assert on exact text.

It is built to make Letta's memory observable:

* "remember that <fact>" / "remember: <fact>" -> a tool call that stores the fact in the ``human``
  block (``memory_insert``, or ``core_memory_append`` for older agents); once the tool result is in
  the request -> "Got it, I will remember that <fact>."
* a question -> answered ONLY from the memory blocks rendered in the system prompt, never from
  the chat history: "From my memory: <line>" or "I don't know that yet.". A correct answer in a new
  conversation therefore proves that Letta kept the memory.
* the service's thread-title request -> the first five words of the message, title-cased.
* magic phrases: "[[slow]]" (20 words, 100 ms apart), "[[long N]]" (N words),
  "[[archive <fact>]]" (``archival_memory_insert``); anything else -> "You said: <message>".
* Letta's summarization request (sent when the context window fills: compaction of ``letta_v1_agent``)
  -> a short summary of the transcript (a few sentences, under 100 words), never a tool call. It is
  recognised by Letta's summarizer prompts (see :func:`is_summary_request`).

Token counting is deliberately simple and documented: ``count_tokens(text) = ceil(len(text) / 4)``
(the usual "4 characters per token" rule of thumb). Prompt tokens add 3 per message plus the
serialised tools; completion tokens count the reply text, or the tool name + JSON arguments. The
same numbers are used for streamed and non-streamed responses.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SLOW_WORDS = 20
SLOW_CHUNK_DELAY_S = 0.1
EMBEDDING_DIMS = 1536

# Memory tools we know how to drive, most preferred first: letta_v1_agent offers memory_insert;
# core_memory_append is the older agents' equivalent.
MEMORY_TOOLS = ("memory_insert", "core_memory_append")
ARCHIVAL_TOOL = "archival_memory_insert"
MEMORY_LABEL = "human"

# Parameters that carry the text to store, by the names Letta's tools use.
_TEXT_PARAMS = ("new_string", "new_str", "content", "text", "value")

_REMEMBER_RE = re.compile(r"\bremember(?:\s+that\b|\s*:)\s*(?P<fact>.+)", re.IGNORECASE | re.DOTALL)
_LONG_RE = re.compile(r"\[\[long\s+(?P<n>\d+)\]\]", re.IGNORECASE)
_ARCHIVE_RE = re.compile(r"\[\[archive\s+(?P<fact>.+?)\]\]", re.IGNORECASE | re.DOTALL)
_SLOW_MARK = "[[slow]]"
_QUESTION_START = re.compile(
    r"^\s*(what|what's|whats|who|who's|whom|whose|where|when|why|how|which|do|does|did|is|are|was|were|"
    r"can|could|tell me)\b",
    re.IGNORECASE,
)
# One memory block as Letta renders it (letta/schemas/memory.py, _render_memory_blocks_standard and
# _render_memory_blocks_line_numbered): <label><description>..</description><metadata>..</metadata>
# [<warning>..</warning>]<value>\n..\n</value></label>
_BLOCK_RE = re.compile(
    r"<(?P<label>[A-Za-z0-9_./-]+)>\s*<description>.*?</description>\s*<metadata>.*?</metadata>\s*"
    r"(?:<warning>.*?</warning>\s*)?<value>\n?(?P<value>.*?)\n?</value>\s*</(?P=label)>",
    re.DOTALL,
)
_MEMORY_BLOCKS_RE = re.compile(r"<memory_blocks>(?P<body>.*?)</memory_blocks>", re.DOTALL)
_LINE_NUMBER_RE = re.compile(r"^\d+→ ?")  # Anthropic-style line numbering, "3→ text"
_WORD_RE = re.compile(r"[a-z0-9]+")
_STOPWORDS_TEXT = """
a about am an and any are as at be been but by can could did do does for from had has have he her hers him
his how i if in into is it its just know me my myself no not of on or our ours please she so some tell than
that the their them then there these they this those to too us was we were what whats when where which who
whom whose why will with would you your yours yourself remember recall don doesn didn isn aren wasn
"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
# Letta packs some non-user events as JSON in user messages (letta/system.py); they are not input.
_NON_INPUT_EVENTS = frozenset({"heartbeat", "login", "system_alert"})

# Letta 0.16.8's summarization requests. In the "sliding_window" (the default) and "all" compaction
# modes, letta/services/summarizer/summarizer.py simple_summary sends the mode's prompt as the system
# message and the evicted messages as one user message built by simple_formatter:
# "<start_transcript>\n[role] text\n...\n<end_transcript>\n. Generate the summary." (roles print as
# "user"/"assistant" or, for user and tool messages, "MessageRole.user"/"MessageRole.tool"). The
# "self_compact_*" modes (self_summarizer.py) append the prompt as the last user message of the agent's
# own request instead, after an assistant "I understand. Let me summarize." when needed. The prompts
# are in letta/prompts/summarizer_prompt.py (and gpt_summarize.py for the legacy summarizer); these are
# their first sentences.
SUMMARY_SYSTEM_PROMPT_OPENINGS = (
    "The following messages are being evicted from the BEGINNING of your context window.",  # SLIDING_PROMPT
    "Your task is to create a detailed summary of the conversation so far",  # ALL_PROMPT
    "The following messages are being evicted from your context window.",  # SHORTER_SUMMARY_PROMPT
    "Your job is to summarize a history of previous messages in a conversation",  # gpt_summarize.SYSTEM
)
SUMMARY_USER_PROMPT_OPENINGS = (
    "The previous messages are being evicted from the BEGINNING of your context window.",  # SELF_SLIDING_PROMPT
    "Your task is to create a detailed summary of the conversation so far.",  # SELF_ALL_PROMPT
)
_TRANSCRIPT_RE = re.compile(r"^<start_transcript>\n(?P<body>.*)\n<end_transcript>\n\. Generate the summary\.$", re.S)
_TRANSCRIPT_LINE_RE = re.compile(r"^\[(?:MessageRole\.)?(?P<role>[a-z_]+)\] (?P<text>.*)$")
_TRANSCRIPT_TOOL_CALL_RE = re.compile(r"(?:^| )-> (?P<name>[A-Za-z_][A-Za-z0-9_]*)\(")
_SELF_SUMMARY_ACK = "I understand. Let me summarize."  # self_summarizer.py's dummy assistant message
_MAGIC_RE = re.compile(r"\[\[.*?\]\]", re.S)
SUMMARY_QUOTE_WORDS = 12
SUMMARY_QUOTE_CHARS = 100
SUMMARY_MAX_TOOLS = 5


# The service's thread-title request (service/threads/titles.py TITLE_PROMPT): answered with the first words of the
# user's message, title-cased ("[[untitled]]" in it: an empty answer, so the service falls back to the message).
TITLE_PROMPT_OPENING = "Write a title of at most six words"
TITLE_WORDS = 5


def title_for(text: str) -> str:
    if "[[untitled]]" in text:
        return ""
    words = re.findall(r"[^\W_]+", _MAGIC_RE.sub(" ", text))
    return " ".join(word.capitalize() for word in words[:TITLE_WORDS]) or "New chat"


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: Mapping[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the scripted model answers: text, or one tool call; plus how fast to stream it."""

    text: str | None = None
    tool_call: ToolCall | None = None
    chunk_delay_s: float = 0.0

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_call is not None else "stop"

    def text_chunks(self) -> list[str]:
        """The reply text word by word; the chunks concatenate back to the exact text."""
        return re.findall(r"\S+\s*", self.text) if self.text else []


# ---------------------------------------------------------------------------------------------
# Reading the request


def message_text(message: Mapping[str, Any]) -> str:
    """Text of a message whose content is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
        return "\n".join(str(p) for p in parts)
    return ""


def _unpack_event(text: str) -> tuple[str | None, str]:
    """Letta's packaged JSON messages ({"type": "user_message", "message": ...}) -> (type, text)."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None, text
    try:
        data = json.loads(stripped)
    except ValueError:
        return None, text
    if not isinstance(data, Mapping) or "type" not in data:
        return None, text
    message = data.get("message")
    return str(data["type"]), message if isinstance(message, str) else ""


def _latest_user_index(messages: Sequence[Mapping[str, Any]]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") != "user":
            continue
        event, _ = _unpack_event(message_text(messages[index]))
        if event not in _NON_INPUT_EVENTS:
            return index
    return None


def latest_user_text(messages: Sequence[Mapping[str, Any]]) -> str | None:
    index = _latest_user_index(messages)
    if index is None:
        return None
    return _unpack_event(message_text(messages[index]))[1].strip()


def system_text(messages: Sequence[Mapping[str, Any]]) -> str:
    # o1/gpt-5 style requests carry the system prompt as role "developer".
    return "\n".join(message_text(m) for m in messages if m.get("role") in ("system", "developer"))


def parse_memory_blocks(system_prompt: str) -> dict[str, str]:
    """Memory blocks rendered in a Letta system prompt: label -> value."""
    wrapper = _MEMORY_BLOCKS_RE.search(system_prompt)
    body = wrapper.group("body") if wrapper else system_prompt
    return {m.group("label"): m.group("value") for m in _BLOCK_RE.finditer(body)}


def offered_tools(body: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Tool name -> JSON schema of its parameters (OpenAI "tools" and legacy "functions")."""
    tools: dict[str, Mapping[str, Any]] = {}
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            tools[function["name"]] = function.get("parameters") or {}
    for function in body.get("functions") or []:
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            tools[function["name"]] = function.get("parameters") or {}
    return tools


# ---------------------------------------------------------------------------------------------
# Deciding


def decide(body: Mapping[str, Any]) -> Reply:
    """The scripted model: one deterministic reply for one chat-completions request body."""
    messages: Sequence[Mapping[str, Any]] = body.get("messages") or []
    if is_summary_request(messages):
        return Reply(text=summarize(messages))
    if system_text(messages).startswith(TITLE_PROMPT_OPENING):
        return Reply(text=title_for(latest_user_text(messages) or ""))
    tools = offered_tools(body)
    user_index = _latest_user_index(messages)
    if user_index is None:
        return Reply(text="Hello! How can I help you?")

    # A tool result after the latest user message means we already acted on it: acknowledge and
    # stop (replying with a tool call again would loop until Letta's max_steps).
    for message in reversed(messages[user_index + 1 :]):
        if message.get("role") == "tool":
            return _after_tool_result(messages, message)

    text = latest_user_text(messages) or ""
    if _SLOW_MARK in text.lower():
        words = " ".join(f"slow{i}" for i in range(1, SLOW_WORDS + 1))
        return Reply(text=words, chunk_delay_s=SLOW_CHUNK_DELAY_S)
    long_match = _LONG_RE.search(text)
    if long_match:
        return Reply(text=" ".join(f"word{i}" for i in range(1, int(long_match.group("n")) + 1)))
    archive_match = _ARCHIVE_RE.search(text)
    if archive_match and ARCHIVAL_TOOL in tools:
        fact = archive_match.group("fact").strip()
        return Reply(tool_call=_tool_call(ARCHIVAL_TOOL, tools[ARCHIVAL_TOOL], fact, body))

    fact = extract_fact(text)
    if fact is not None:
        for name in MEMORY_TOOLS:
            if name in tools:
                return Reply(tool_call=_tool_call(name, tools[name], fact, body))
        return Reply(text=f"I have no memory tool, so I cannot remember that {fact}.")

    if is_question(text):
        return Reply(text=answer_from_memory(text, parse_memory_blocks(system_text(messages))))
    return Reply(text=f"You said: {text}")


# ---------------------------------------------------------------------------------------------
# Letta's summarization request


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    return message_text(last) if last is not None else ""


def is_summary_request(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Letta asks for a summary: its summarizer prompt is the system message (or, in self-compaction,
    the last user message), or the last user message is simple_formatter's transcript."""
    if system_text(messages).lstrip().startswith(SUMMARY_SYSTEM_PROMPT_OPENINGS):
        return True
    last = _last_user_text(messages).lstrip()
    return last.startswith(SUMMARY_USER_PROMPT_OPENINGS) or _TRANSCRIPT_RE.match(last) is not None


@dataclass(frozen=True, slots=True)
class _Said:
    role: str
    text: str
    tools: tuple[str, ...] = ()


def _transcript_entries(transcript: str) -> list[_Said]:
    """simple_formatter's lines back into messages (a line without a "[role] " tag continues one)."""
    entries: list[_Said] = []
    for line in transcript.split("\n"):
        match = _TRANSCRIPT_LINE_RE.match(line)
        if match is not None:
            role, text = match.group("role"), match.group("text")
            call = _TRANSCRIPT_TOOL_CALL_RE.search(text) if role == "assistant" else None
            entries.append(_Said(role, text, (call.group("name"),) if call else ()))
        elif entries:
            entries[-1] = _Said(entries[-1].role, entries[-1].text + "\n" + line, entries[-1].tools)
    return entries


def _chat_entries(messages: Sequence[Mapping[str, Any]]) -> list[_Said]:
    """The agent's own messages before the summary request (self-compaction)."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages))
    entries = []
    for message in messages[:last_user]:
        role, text = str(message.get("role")), message_text(message)
        if role in ("system", "developer") or (role == "assistant" and text == _SELF_SUMMARY_ACK):
            continue
        calls = [c.get("function") or {} for c in message.get("tool_calls") or [] if isinstance(c, Mapping)]
        entries.append(_Said(role, text, tuple(str(f.get("name", "")) for f in calls)))
    return entries


def _quote(text: str) -> str:
    """The first words of a message, without magic phrases: at most 12 words and 100 characters."""
    words = _MAGIC_RE.sub(" ", text).split()
    quoted = " ".join(words[:SUMMARY_QUOTE_WORDS])
    if len(quoted) > SUMMARY_QUOTE_CHARS:
        return quoted[:SUMMARY_QUOTE_CHARS] + "..."
    return quoted + "..." if len(words) > SUMMARY_QUOTE_WORDS else quoted


def summarize(messages: Sequence[Mapping[str, Any]]) -> str:
    """A short, deterministic summary of what Letta asks to summarize: message counts, the tools used,
    the user's first and latest words (magic "[[...]]" phrases left out), and whether an earlier
    summary was folded in. At most about 70 words, well under every Letta summary word limit."""
    transcript = _TRANSCRIPT_RE.match(_last_user_text(messages).lstrip())
    entries = _transcript_entries(transcript.group("body")) if transcript else _chat_entries(messages)
    inputs: list[str] = []
    earlier_summary = False
    for entry in entries:
        if entry.role != "user":
            continue
        event, text = _unpack_event(entry.text)
        if event == "system_alert" and "summary" in text:
            earlier_summary = True
        elif event not in _NON_INPUT_EVENTS:
            inputs.append(text)
    replies = sum(1 for e in entries if e.role == "assistant")
    tools = list(dict.fromkeys(name for e in entries for name in e.tools if name))[:SUMMARY_MAX_TOOLS]
    quotes = [q for q in map(_quote, inputs) if q]
    plural = "" if len(entries) == 1 else "s"
    summary = f"Summary of {len(entries)} earlier message{plural}: {len(inputs)} from the user, {replies} from me."
    if earlier_summary:
        summary += " It continues an earlier summary."
    if tools:
        summary += f" I used {', '.join(tools)}."
    if quotes:
        summary += f' The user first said "{quotes[0]}"'
        summary += f' and last said "{quotes[-1]}".' if len(quotes) > 1 else "."
    return summary


# ---------------------------------------------------------------------------------------------
# Remembering and answering


def extract_fact(text: str) -> str | None:
    """The fact in "remember that <fact>" / "remember: <fact>"; a question ("...?") is not one."""
    if text.rstrip().endswith("?"):
        return None
    match = _REMEMBER_RE.search(text)
    if match is None:
        return None
    fact = match.group("fact").strip().rstrip(".!").strip()
    return fact or None


def is_question(text: str) -> bool:
    return text.rstrip().endswith("?") or _QUESTION_START.match(text) is not None


def significant_words(text: str) -> set[str]:
    words = set()
    for word in _WORD_RE.findall(text.lower().replace("'", "")):
        if len(word) < 3 or word in _STOPWORDS:
            continue
        # Crude plural folding, so "colours" matches "colour".
        words.add(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return words


def answer_from_memory(question: str, blocks: Mapping[str, str]) -> str:
    """Best line of the human block sharing a significant word with the question (newest wins ties)."""
    wanted = significant_words(question)
    best_line, best_score = None, 0
    for raw_line in blocks.get(MEMORY_LABEL, "").splitlines():
        line = _LINE_NUMBER_RE.sub("", raw_line).strip()
        score = len(wanted & significant_words(line))
        if line and score >= best_score and score > 0:
            best_line, best_score = line, score
    return f"From my memory: {best_line}" if best_line else "I don't know that yet."


def _after_tool_result(messages: Sequence[Mapping[str, Any]], result: Mapping[str, Any]) -> Reply:
    call = _find_tool_call(messages, result.get("tool_call_id"))
    status, detail = _tool_result_status(message_text(result))
    if status == "Failed":
        return Reply(text=f"I could not do that: {detail}")
    if call is None:
        return Reply(text="Done.")
    name, arguments = call
    fact = next((str(arguments[p]) for p in _TEXT_PARAMS if isinstance(arguments.get(p), str)), "")
    if name == ARCHIVAL_TOOL:
        return Reply(text=f"Got it, I archived that: {fact}.")
    if name in MEMORY_TOOLS or name.startswith(("memory_", "core_memory_")):
        return Reply(text=f"Got it, I will remember that {fact}.")
    return Reply(text="Done.")


def _find_tool_call(messages: Sequence[Mapping[str, Any]], call_id: object) -> tuple[str, dict[str, Any]] | None:
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if not isinstance(call, Mapping) or call.get("id") != call_id:
                continue
            function = call.get("function") or {}
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except ValueError:
                arguments = {}
            return str(function.get("name", "")), arguments if isinstance(arguments, dict) else {}
    return None


def _tool_result_status(content: str) -> tuple[str | None, str]:
    """Letta wraps tool returns as {"status": "OK"|"Failed", "message": ..., "time": ...}."""
    try:
        data = json.loads(content)
    except ValueError:
        return None, content
    if isinstance(data, Mapping):
        return (str(data["status"]) if "status" in data else None), str(data.get("message", ""))
    return None, content


def _tool_call(name: str, schema: Mapping[str, Any], text: str, body: Mapping[str, Any]) -> ToolCall:
    """Arguments filled from the tool's JSON schema, so strict-mode schemas (all required) work too."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    arguments: dict[str, Any] = {}
    text_param = next((p for p in _TEXT_PARAMS if p in properties), None)
    for param, spec in properties.items():
        if param == "label":
            arguments[param] = MEMORY_LABEL
        elif param == text_param:
            arguments[param] = text
        elif param == "request_heartbeat":
            arguments[param] = True  # older agents only continue the loop when asked to
        elif param in required:
            arguments[param] = _default_for(param, spec if isinstance(spec, Mapping) else {})
    if text_param is None:  # schema without properties: use Letta's names
        arguments.update({"label": MEMORY_LABEL, "content": text} if name != ARCHIVAL_TOOL else {"content": text})
    digest = hashlib.sha256(json.dumps(body.get("messages") or [], sort_keys=True, default=str).encode())
    return ToolCall(id=f"call_{digest.hexdigest()[:24]}", name=name, arguments=arguments)


def _default_for(param: str, spec: Mapping[str, Any]) -> Any:
    if param == "insert_line":
        return -1  # memory_insert: append at the end (None would crash Letta's range check)
    if "default" in spec:
        return spec["default"]
    raw_kinds = spec.get("type")
    kinds = set(raw_kinds) if isinstance(raw_kinds, list) else {raw_kinds}
    if "null" in kinds:
        return None
    if "integer" in kinds or "number" in kinds:
        return 0
    if "boolean" in kinds:
        return False
    if "array" in kinds:
        return []
    if "object" in kinds:
        return {}
    return ""


# ---------------------------------------------------------------------------------------------
# Token counting and embeddings


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def prompt_tokens(body: Mapping[str, Any]) -> int:
    total = 3  # reply priming, as OpenAI counts it
    for message in body.get("messages") or []:
        total += 3 + count_tokens(message_text(message))
        if message.get("tool_calls"):
            total += count_tokens(json.dumps(message["tool_calls"], sort_keys=True))
    if body.get("tools"):
        total += count_tokens(json.dumps(body["tools"], sort_keys=True))
    return total


def completion_tokens(reply: Reply) -> int:
    if reply.tool_call is not None:
        return count_tokens(reply.tool_call.name + reply.tool_call.arguments_json)
    return count_tokens(reply.text or "")


def embedding_inputs(raw: object) -> list[str]:
    """OpenAI's ``input``: a string, a list of strings, or token arrays (hashed as their text)."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        return [json.dumps(raw)]
    if isinstance(raw, list):
        return [x if isinstance(x, str) else json.dumps(x) for x in raw]
    return [json.dumps(raw)]


def embed(text: str, dims: int = EMBEDDING_DIMS) -> list[float]:
    """Deterministic unit vector: hashed bag of words plus a small per-text hash component.

    Texts sharing words get a positive cosine similarity, so archival search behaves plausibly.
    """
    noise = hashlib.shake_256(text.encode()).digest(2 * dims)
    vector = [v / 32768.0 * 0.1 for v in struct.unpack(f"<{dims}h", noise)]
    for word in significant_words(text):
        digest = hashlib.sha256(word.encode()).digest()
        index = int.from_bytes(digest[:4], "little") % dims
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]
