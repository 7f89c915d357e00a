"""The user's whole chat history as a streamed download, JSON or Markdown, in bounded memory."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec

from service.chat.schemas import ChatMessage, MessageFeedback
from service.chat.store import all_messages
from service.db import Database

EXPORT_BATCH = 500


async def _messages(db: Database, user_id: uuid.UUID, thread_id: uuid.UUID | None) -> AsyncIterator[list[ChatMessage]]:
    async for rows in all_messages(db, user_id, EXPORT_BATCH, thread_id):
        yield [ChatMessage.of(row) for row in rows]


async def export_json(db: Database, user_id: uuid.UUID, thread_id: uuid.UUID | None = None) -> AsyncIterator[bytes]:
    header = {"user_id": str(user_id), "exported_at": datetime.now(UTC).isoformat()}
    if thread_id:
        header["thread_id"] = str(thread_id)
    yield msgspec.json.encode(header)[:-1] + b', "messages": ['
    first = True
    async for batch in _messages(db, user_id, thread_id):
        for message in batch:
            yield (b"" if first else b",") + msgspec.json.encode(message)
            first = False
    yield b"]}"


# A line that Markdown would read as a heading, a thematic break or a setext underline: a message could
# otherwise forge the exporter's own "### Assistant · <date>" headings.
_BLOCK_START = re.compile(r"^( {0,3})(#|=+\s*$|-{3,}\s*$|\*{3,}\s*$|_{3,}\s*$)", re.MULTILINE)


def markdown_text(content: str) -> str:
    """A message's text, with what would start a Markdown heading or rule escaped (shown as typed)."""
    return _BLOCK_START.sub(lambda m: f"{m.group(1)}\\{m.group(2)}", content)


def feedback_markdown(feedback: MessageFeedback | None) -> str:
    """A reply's feedback, under it: the rating, and the comment quoted."""
    if feedback is None:
        return ""
    rating = "👍 up" if feedback.rating == "up" else "👎 down"
    lines = markdown_text(feedback.comment).splitlines() if feedback.comment else []
    quoted = "".join(f"> {line}\n" for line in lines)
    return f"\n**Your feedback:** {rating}\n" + (f"\n{quoted}" if quoted else "")


async def export_markdown(db: Database, user_id: uuid.UUID, thread_id: uuid.UUID | None = None) -> AsyncIterator[bytes]:
    yield f"# Chat export\n\nExported {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n".encode()
    async for batch in _messages(db, user_id, thread_id):
        lines = []
        for m in batch:
            who = "You" if m.role == "user" else "Assistant"
            note = "" if m.status == "complete" else f" _({m.status})_"
            lines.append(f"\n### {who} · {m.created_at:%Y-%m-%d %H:%M:%S}{note}\n\n{markdown_text(m.content)}\n")
            lines.append(feedback_markdown(m.feedback))
        yield "".join(lines).encode()
