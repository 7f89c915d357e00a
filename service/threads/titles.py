"""A thread's title after its first reply: written by the LLM on the user's own key (billed and recorded like any
call of the LLM proxy), or taken from the first message when that fails. Off the turn's path: the title arrives
a moment after the reply is stored."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

import msgspec

from service.background import Detached
from service.db import Database
from service.errors import DomainError
from service.llm.service import LLMProxy
from service.settings import Settings
from service.threads import store

logger = logging.getLogger("service.threads")

TITLE_PROMPT = (
    "Write a title of at most six words for the conversation that starts with the user's message below. "
    "Answer with the title only, without quotes."
)
TITLE_MAX_TOKENS = 24
TITLE_INPUT_CHARS = 2000
FALLBACK_CHARS = 60
_SPACE = re.compile(r"\s+")
_QUOTES = "\"'`*#\u201c\u201d\u2018\u2019"  # what models wrap titles in, typographic quotes too


def clean_title(text: str, limit: int = FALLBACK_CHARS) -> str:
    """One line, no surrounding quotes or trailing dot, at most ``limit`` characters (cut at a word)."""
    title = _SPACE.sub(" ", text).strip().strip(_QUOTES).strip().rstrip(".").strip()
    if len(title) > limit:
        title = title[:limit].rsplit(" ", 1)[0].rstrip(",;:-") + "…"
    return title


class ThreadTitler:
    def __init__(self, db: Database, proxy: LLMProxy, settings: Settings) -> None:
        self.db = db
        self.proxy = proxy
        self.settings = settings
        self._detached = Detached()

    def title_later(self, user_id: uuid.UUID, thread_id: uuid.UUID, first_message: str) -> None:
        self._detached.spawn(self.title(user_id, thread_id, first_message))

    async def title(self, user_id: uuid.UUID, thread_id: uuid.UUID, first_message: str) -> None:
        generated = await self._generated(user_id, first_message) if self.settings.thread_titles == "llm" else None
        title, source = generated, "generated"
        if not title:
            title, source = clean_title(first_message), "first_message"
        try:
            await self.db.execute(store.SET_TITLE, thread_id, title or "New chat", source)
        except Exception as exc:  # the next reply in an untitled thread tries again
            logger.warning("could not store a thread's title", extra={"error": repr(exc)})

    async def _generated(self, user_id: uuid.UUID, first_message: str) -> str | None:
        body = {
            "model": self.settings.llm_model,
            "messages": [
                {"role": "system", "content": TITLE_PROMPT},
                {"role": "user", "content": first_message[:TITLE_INPUT_CHARS]},
            ],
            "max_tokens": TITLE_MAX_TOKENS,
        }
        try:
            call = self.proxy.parse(body)
            answer: Any = msgspec.json.decode(await self.proxy.complete(user_id, call))
            text = answer["choices"][0]["message"]["content"]
        except DomainError as exc:  # over budget, rate limited, LiteLLM down: the first message will do
            logger.info("no generated title", extra={"code": exc.code})
            return None
        except Exception as exc:
            logger.warning("no generated title", extra={"error": repr(exc)})
            return None
        return clean_title(text) if isinstance(text, str) else None

    async def drain(self, grace_seconds: float = 10.0) -> None:
        await self._detached.drain(grace_seconds)
