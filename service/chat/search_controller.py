"""``GET /api/v1/chat/search``: full-text search over the caller's own messages, best match first.

The SQL function behind it (``private.search_messages_for``, migration ``20261130000700_message_search``) is the
one the frontend reaches with ``supabase.rpc('search_messages', ...)``: the same words, ranking, snippets and
refusals on both paths.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

import asyncpg
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from service.auth.dependencies import provide_ready_profile
from service.chat import store
from service.chat.errors import no_such_thread
from service.chat.schemas import SearchHit, SearchPage
from service.db import Database
from service.errors import DomainError
from service.pagination import decode_rank_cursor, encode_rank_cursor
from service.rate_limit import SEARCH_BUCKET, rate_limit
from service.settings import Settings
from service.threads import store as thread_store
from service.users.profiles import ReadyProfile
from service.web.examples import MESSAGE_EXAMPLE, THREAD_EXAMPLE
from service.web.openapi import NOT_READY, documented, ok, rate_limited

logger = logging.getLogger("service.chat")

SEARCH_EXAMPLE = {
    "results": [
        {
            "id": MESSAGE_EXAMPLE["id"],
            "thread_id": MESSAGE_EXAMPLE["thread_id"],
            "thread_title": THREAD_EXAMPLE["title"],
            "role": "assistant",
            "created_at": MESSAGE_EXAMPLE["created_at"],
            "rank": 0.062133495,
            "snippet": "Got it, I will remember that your \ue000cat\ue001 is Miso.",
        }
    ],
    "next_cursor": "MC4wNjIxMzM0OTV8N2FhMWMyZDMtMDAwMC00MDAwLTgwMDAtMDAwMDAwMDAwMDAy",
}


class ChatSearchController(Controller):
    path = "/api/v1/chat"
    tags = ["chat"]
    dependencies = {"profile": Provide(provide_ready_profile)}

    @get(
        "/search",
        summary="Search your messages (full text, best match first, keyset pagination)",
        description=(
            "`q` in web-search syntax: words (English and Russian are matched by stem, so `cats` finds `cat` and "
            '`кошки` finds `кошка`), `"a phrase"`, `-excluded`, `or`. Each result\'s `snippet` is the message, or '
            "up to two fragments of it joined by ` … `, with every match between U+E000 and U+E001: plain text to "
            "split on those markers, never HTML. The same search is `supabase.rpc('search_messages', {query})`."
        ),
        guards=[rate_limit(SEARCH_BUCKET)],
        responses={
            200: ok(SearchPage, "A page of results", SEARCH_EXAMPLE),
            400: documented(DomainError("invalid_cursor")),
            404: documented(DomainError("no_such_thread"), "`thread_id` is not one of your threads"),
            422: documented(
                DomainError(
                    "invalid_search_query",
                    "the search query has no word to look for (only common words, punctuation or excluded words)",
                ),
                "Empty, over 200 characters, or nothing to look for (stop words, punctuation, excluded words only); "
                "or `search_too_broad`: still ranking matches after `SEARCH_TIMEOUT_SECONDS` (2 s by default)",
            ),
            429: rate_limited(SEARCH_BUCKET, 60),  # the default RATE_LIMIT_SEARCH_PER_MINUTE
            503: NOT_READY,
        },
    )
    async def search(
        self,
        profile: NamedDependency[ReadyProfile],
        db: NamedDependency[Database],
        settings: NamedDependency[Settings],
        q: Annotated[str, QueryParameter(description="what to look for (at most 200 characters)")],
        limit: Annotated[int, QueryParameter(ge=1, le=50, description="page size (1-50)")] = 20,
        before: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page", max_length=200)
        ] = None,
        thread_id: Annotated[uuid.UUID | None, QueryParameter(description="only this thread (default: all)")] = None,
    ) -> SearchPage:
        after = decode_rank_cursor(before) if before else None
        if "\x00" in q:  # Postgres cannot take it as text: refused here, before the function's own rules
            raise DomainError("invalid_search_query", "the search query must not contain NUL characters")
        try:
            rows = await store.search_messages(
                db, profile.id, q, limit + 1, after, thread_id, timeout_seconds=settings.search_timeout_seconds
            )
        except asyncpg.InvalidParameterValueError as exc:
            # The function's own refusals, worded for users (the other 22023 causes are bounded out above).
            raise DomainError("invalid_search_query", exc.message) from exc
        except asyncpg.QueryCanceledError as exc:
            # Not the query's text in the log: it is the user's.
            logger.warning(
                "search cancelled: too broad to rank in time",
                extra={"user_id": str(profile.id), "query_chars": len(q), "thread_id": str(thread_id or "")},
            )
            raise DomainError("search_too_broad") from exc
        if thread_id and not rows and not await db.fetchval(thread_store.ONE, thread_id, profile.id):
            raise no_such_thread()
        results = [SearchHit.of(row) for row in rows[:limit]]
        next_cursor = encode_rank_cursor(results[-1].rank, results[-1].id) if len(rows) > limit else None
        return SearchPage(results=results, next_cursor=next_cursor)
