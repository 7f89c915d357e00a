"""Message search through the in-process API on the real Postgres (migrations, the GIN index, the search functions):
ranking, snippets, the thread filter, keyset paging, refused queries, isolation between users, a deleted thread's
messages, the rate limit, the time limit, and the frontend's path (``public.search_messages`` as PostgREST calls
it) answering the same as the route."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from devstack.keys import SigningKey
from service.chat import store as chat_store
from tests.integration.support import PoolFactory, app_client, assert_problem, ready_user

pytestmark = pytest.mark.integration

SEARCH = "/api/v1/chat/search"
START, STOP = "\ue000", "\ue001"


async def a_message(
    db: asyncpg.Connection[Any],
    user_id: uuid.UUID,
    content: str,
    *,
    thread_id: uuid.UUID | None = None,
    role: str = "user",
) -> uuid.UUID:
    """A stored message, as the service writes one (no thread: the user's default thread)."""
    message_id: uuid.UUID = await db.fetchval(
        "insert into public.messages (user_id, thread_id, turn_id, role, content) values ($1, $2, $3, $4, $5) "
        "returning id",
        user_id,
        thread_id,
        uuid.uuid4(),
        role,
        content,
    )
    return message_id


async def a_thread(client: AsyncTestClient[Litestar], headers: dict[str, str], title: str) -> uuid.UUID:
    response = await client.post("/api/v1/threads", headers=headers, json={"title": title})
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["id"])


async def search(client: AsyncTestClient[Litestar], headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await client.get(SEARCH, headers=headers, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_ranked_results_with_snippets_threads_and_isolation(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    ann, ann_headers = await ready_user(database_url, signing_key, own_agent=True)
    bob, bob_headers = await ready_user(database_url, signing_key, own_agent=True)
    pets = await a_thread(client, ann_headers, "Pets")
    once = await a_message(db, ann, "My cat Miso sleeps on the sofa all afternoon")
    most = await a_message(
        db, ann, "Cats! The cat and the other cats: cats everywhere", thread_id=pets, role="assistant"
    )
    russian = await a_message(db, ann, "Моя кошка любит рыбу, кошки соседа любят молоко")
    await a_message(db, ann, "Nothing to see here")
    await a_message(db, bob, "Bob's cat and Bob's secret: zanzibar")

    body = await search(client, ann_headers, q="cats")
    results = body["results"]
    assert [hit["id"] for hit in results] == [str(most), str(once)], "the message most about cats first; none of Bob's"
    assert results[0]["rank"] > results[1]["rank"] > 0
    assert body["next_cursor"] is None
    first = results[0]
    assert (first["thread_id"], first["thread_title"], first["role"]) == (str(pets), "Pets", "assistant")
    default_thread = await db.fetchval("select id from public.threads where user_id = $1 and is_default", ann)
    assert (results[1]["thread_id"], results[1]["thread_title"]) == (str(default_thread), None)
    # A short message is its own snippet, every form of the word marked (English stemming: cats, cat).
    assert first["snippet"] == f"{START}Cats{STOP}! The {START}cat{STOP} and the other {START}cats{STOP}: " + (
        f"{START}cats{STOP} everywhere"
    )
    created_at = await db.fetchval("select created_at from public.messages where id = $1", most)
    assert first["created_at"].replace("Z", "+00:00") == created_at.isoformat()

    # Russian stemming: one form of the word finds the others.
    hits = (await search(client, ann_headers, q="кошку"))["results"]
    assert [hit["id"] for hit in hits] == [str(russian)]
    assert f"{START}кошка{STOP}" in hits[0]["snippet"] and f"{START}кошки{STOP}" in hits[0]["snippet"]

    # Isolation: neither finds the other's words.
    assert (await search(client, ann_headers, q="zanzibar"))["results"] == []
    assert (await search(client, bob_headers, q="sofa"))["results"] == []
    assert [hit["snippet"] for hit in (await search(client, bob_headers, q="cat"))["results"]] == [
        f"Bob's {START}cat{STOP} and Bob's secret: zanzibar"
    ]


async def test_long_message_snippet_is_fragments_around_the_matches(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    user_id, headers = await ready_user(database_url, signing_key, own_agent=True)
    filler = " ".join(f"word{n}" for n in range(200))
    await a_message(db, user_id, f"{filler} then the giraffe appears {filler} and a giraffe again {filler}")
    (hit,) = (await search(client, headers, q="giraffe"))["results"]
    snippet = hit["snippet"]
    assert snippet.count(f"{START}giraffe{STOP}") == 2
    assert " … " in snippet, "two fragments, joined"
    assert len(snippet) < 600, "fragments, not the 3,000-character message"


async def test_thread_filter(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    ann, ann_headers = await ready_user(database_url, signing_key, own_agent=True)
    bob, bob_headers = await ready_user(database_url, signing_key, own_agent=True)
    trip, work = await a_thread(client, ann_headers, "Trip"), await a_thread(client, ann_headers, "Work")
    in_trip = await a_message(db, ann, "the train to Lisbon leaves at nine", thread_id=trip)
    await a_message(db, ann, "the Lisbon office report is due", thread_id=work)
    bobs = await a_thread(client, bob_headers, "Bob's")
    await a_message(db, bob, "Lisbon in spring", thread_id=bobs)

    assert len((await search(client, ann_headers, q="lisbon"))["results"]) == 2
    only_trip = (await search(client, ann_headers, q="lisbon", thread_id=str(trip)))["results"]
    assert [hit["id"] for hit in only_trip] == [str(in_trip)]
    # A thread without a match is an empty page; someone else's thread, or none, is not found.
    assert (await search(client, ann_headers, q="spring", thread_id=str(trip)))["results"] == []
    for thread in (bobs, uuid.uuid4()):
        response = await client.get(SEARCH, headers=ann_headers, params={"q": "lisbon", "thread_id": str(thread)})
        assert assert_problem(response, 404)["code"] == "no_such_thread"


async def test_keyset_pages_have_no_duplicates_or_gaps(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    user_id, headers = await ready_user(database_url, signing_key, own_agent=True)
    # Ranks from 1 to 4 mentions, and many equal ranks (the same text): the id breaks the ties.
    matching = set()
    for n in range(23):
        mentions = " ".join(["kiwi"] * (1 + n % 4))
        matching.add(await a_message(db, user_id, f"about the {mentions} fruit"))
    for _ in range(5):
        await a_message(db, user_id, "about the mango fruit")

    whole = (await search(client, headers, q="kiwi", limit=50))["results"]
    assert {uuid.UUID(hit["id"]) for hit in whole} == matching
    order = [(hit["rank"], uuid.UUID(hit["id"])) for hit in whole]
    assert order == sorted(order, reverse=True), "rank desc, then id desc"

    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"q": "kiwi", "limit": 5, **({"before": cursor} if cursor else {})}
        body = await search(client, headers, **params)
        pages.append(body["results"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        if len(pages) == 1:
            # A new best match written meanwhile ranks before the cursor: the next pages neither repeat nor skip.
            await a_message(db, user_id, "kiwi kiwi kiwi kiwi kiwi kiwi")
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert [hit["id"] for page in pages for hit in page] == [hit["id"] for hit in whole]


async def test_bounded_queries_are_refused_with_problems(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    user_id, headers = await ready_user(database_url, signing_key, own_agent=True)
    await a_message(db, user_id, "the cat sat on the mat")

    refused = {
        "   ": "the search query is empty",
        "cat " * 50 + "x": "the search query is longer than 200 characters",
        "the and of и в": "no word to look for",
        "-cat": "no word to look for",
        "!!! ... ???": "no word to look for",
        "cat\x00": "NUL",
    }
    for query, detail in refused.items():
        body = assert_problem(await client.get(SEARCH, headers=headers, params={"q": query}), 422)
        assert body["code"] == "invalid_search_query", query
        assert detail in body["detail"], (query, body["detail"])
    # 200 characters is still a query.
    assert len((await search(client, headers, q="cat " * 49 + "mat!"))["results"]) == 1

    assert_problem(await client.get(SEARCH, headers=headers), 400)  # no q
    for limit in (0, 51):
        assert_problem(await client.get(SEARCH, headers=headers, params={"q": "cat", "limit": limit}), 400)
    # Not base64; "nan|<id>"; "1e999|<id>" (infinite); "1e300|<id>" (past the largest real).
    bad_cursors = (
        "nonsense",
        "bmFufDdhYTFjMmQzLTAwMDAtNDAwMC04MDAwLTAwMDAwMDAwMDAwMg",
        "MWU5OTl8N2FhMWMyZDMtMDAwMC00MDAwLTgwMDAtMDAwMDAwMDAwMDAy",
        "MWUzMDB8N2FhMWMyZDMtMDAwMC00MDAwLTgwMDAtMDAwMDAwMDAwMDAy",
    )
    for cursor in bad_cursors:
        response = await client.get(SEARCH, headers=headers, params={"q": "cat", "before": cursor})
        assert assert_problem(response, 400)["code"] == "invalid_cursor", cursor
    assert_problem(await client.get(SEARCH, params={"q": "cat"}), 401)


async def test_a_deleted_threads_messages_are_not_found(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    user_id, headers = await ready_user(database_url, signing_key, own_agent=True)
    doomed = await a_thread(client, headers, "Doomed")
    await a_message(db, user_id, "the password hint is walrus", thread_id=doomed)
    kept = await a_message(db, user_id, "a walrus at the zoo")
    assert len((await search(client, headers, q="walrus"))["results"]) == 2

    response = await client.delete(f"/api/v1/threads/{doomed}", headers=headers)
    assert response.status_code == 204, response.text
    assert [hit["id"] for hit in (await search(client, headers, q="walrus"))["results"]] == [str(kept)]


async def test_the_frontends_function_answers_as_the_route(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    """``supabase.rpc('search_messages', ...)``: PostgREST switches to ``authenticated`` with the token's claims and
    calls the function; the rows are the route's, and its paging arguments are the last row's rank and id."""
    user_id, headers = await ready_user(database_url, signing_key, own_agent=True)
    for n in range(7):
        await a_message(db, user_id, " ".join(["otter"] * (1 + n % 3)) + f" number {n}")
    route = (await search(client, headers, q="otter", limit=50))["results"]

    async def rpc(*args: Any) -> list[asyncpg.Record]:
        async with db.transaction():
            await db.execute(
                "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)",
                json.dumps({"sub": str(user_id), "role": "authenticated"}),
            )
            return await db.fetch("select * from public.search_messages($1, $2, $3, $4)", *args)

    rows: list[asyncpg.Record] = []
    while True:
        page = await rpc("otter", 3, *((rows[-1]["rank"], rows[-1]["id"]) if rows else (None, None)))
        rows += page
        if len(page) < 3:
            break
    assert [(hit["id"], hit["rank"], hit["snippet"]) for hit in route] == [
        (str(row["id"]), row["rank"], row["snippet"]) for row in rows
    ]


async def test_search_has_its_own_rate_limit(
    database_url: str, db: asyncpg.Connection[Any], signing_key: SigningKey
) -> None:
    _, headers = await ready_user(database_url, signing_key, own_agent=True)
    async with app_client(database_url, signing_key, RATE_LIMIT_SEARCH_PER_MINUTE="2") as client:
        for _ in range(2):
            assert (await client.get(SEARCH, headers=headers, params={"q": "cat"})).status_code == 200
        refused = await client.get(SEARCH, headers=headers, params={"q": "cat"})
        body = assert_problem(refused, 429)
        assert (body["code"], body["bucket"]) == ("rate_limited", "search")
        assert int(refused.headers["retry-after"]) > 0
        # Per user: another user still searches.
        _, other = await ready_user(database_url, signing_key, own_agent=True)
        assert (await client.get(SEARCH, headers=other, params={"q": "cat"})).status_code == 200


async def test_a_search_too_broad_to_rank_in_time_is_cancelled_with_a_problem(
    database_url: str, db: asyncpg.Connection[Any], signing_key: SigningKey, new_pool: PoolFactory
) -> None:
    user_id, headers = await ready_user(database_url, signing_key, own_agent=True)
    await db.execute(
        "insert into public.messages (user_id, turn_id, role, content) "
        "select $1, gen_random_uuid(), 'user', 'my cat number ' || n || ' sat on mat ' || n "
        "from generate_series(1, 30000) n",
        user_id,
    )
    await a_message(db, user_id, "a quetzalcoatlus flew over")
    # Ranking 30,000 matches takes tens of milliseconds: past a 1 ms limit, Postgres cancels it.
    async with app_client(database_url, signing_key, SEARCH_TIMEOUT_SECONDS="0.001") as client:
        body = assert_problem(await client.get(SEARCH, headers=headers, params={"q": "cat"}), 422)
        assert body["code"] == "search_too_broad"
        assert "add words" in body["detail"]
    # At the default limit (2 s) the same search answers.
    async with app_client(database_url, signing_key) as client:
        assert len((await search(client, headers, q="cat", limit=50))["results"]) == 50

    # The limit is the search's transaction's own: the pooled connection keeps its own setting afterwards.
    pool = await new_pool(min_size=1, max_size=1)
    with pytest.raises(asyncpg.QueryCanceledError):
        await chat_store.search_messages(pool, user_id, "cat", 21, timeout_seconds=0.001)
    assert len(await chat_store.search_messages(pool, user_id, "quetzalcoatlus", 21, timeout_seconds=1)) == 1
    assert await pool.fetchval("show statement_timeout") == "0"
