"""The PostgREST double (and the API gateway double in front of it) against the real Postgres with our migrations:
what supabase-js sends from the web client, answered under the database's own grants and row level security, with
PostgREST's shapes for rows, embedded resources and errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from devstack.doubles import gotrue_double
from devstack.doubles.api_gateway import Gateway
from devstack.doubles.postgrest_double import PostgrestDouble, authenticator_url, create_app
from devstack.gotrue import sign_up
from devstack.keys import SigningKey
from tests.integration.support import ISSUER, SERVICE_KEY

pytestmark = pytest.mark.integration

# What examples/web/src/data.ts asks for.
THREADS = {
    "select": "id,title,title_source,is_default,forked_from_thread_id,forked_from_message_id,created_at,"
    "last_message_at",
    "order": "last_message_at.desc,id.desc",
    "limit": "100",
}
MESSAGES = {
    "select": "id,turn_id,role,content,status,message_feedback(rating)",
    "order": "created_at.desc,id.desc",
    "limit": "100",
}
HS256_SECRET = "legacy-jwt-secret-with-at-least-32-characters"
PUBLISHABLE_KEY = "sb_publishable_test"


@pytest.fixture
async def rest(database_url: str, signing_key: SigningKey) -> AsyncIterator[PostgrestDouble]:
    app = create_app(authenticator_url(database_url), signing_key.jwks(), HS256_SECRET)
    yield app
    await app.close()


@pytest.fixture
async def http(rest: PostgrestDouble) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rest), base_url="http://rest") as client:
        yield client


class Person:
    def __init__(self, user_id: uuid.UUID, token: str) -> None:
        self.id, self.token = user_id, token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept-Profile": "public"}


async def person(database_url: str, signing_key: SigningKey) -> Person:
    user_id = await sign_up(database_url, f"{uuid.uuid4().hex[:10]}@example.com")
    return Person(user_id, signing_key.access_token(user_id, issuer=ISSUER))


async def a_turn(db: asyncpg.Connection[Any], user: Person, text: str, rating: str | None = None) -> uuid.UUID:
    """A user message and its reply in the user's default thread, as the service stores them; the reply's id."""
    turn = uuid.uuid4()
    thread = await db.fetchval("select id from public.threads where user_id = $1 and is_default", user.id)
    insert = (
        "insert into public.messages (user_id, thread_id, turn_id, role, content, status) "
        "values ($1, $2, $3, $4, $5, 'complete') returning id"
    )
    await db.fetchval(insert, user.id, thread, turn, "user", text)
    reply: uuid.UUID = await db.fetchval(insert, user.id, thread, turn, "assistant", f"You said: {text}")
    if rating:
        await db.execute(
            "insert into public.message_feedback (message_id, user_id, rating) values ($1, $2, $3)",
            reply,
            user.id,
            rating,
        )
    return reply


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """PostgREST's error body, with its status and code."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "details", "hint"}, body
    assert body["code"] == code, body
    assert response.headers["proxy-status"] == f"PostgREST; error={code}"
    return body


async def test_a_user_reads_their_own_rows_with_embedded_resources(
    http: httpx.AsyncClient, db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    ann, bob = await person(database_url, signing_key), await person(database_url, signing_key)
    rated = await a_turn(db, ann, "my cat is Miso", rating="up")
    await a_turn(db, ann, "and my dog is Rex")
    await a_turn(db, bob, "bob's secret")

    threads = await http.get("/threads", params=THREADS, headers=ann.headers)
    assert threads.status_code == 200, threads.text
    assert threads.headers["content-type"] == "application/json; charset=utf-8"
    assert threads.headers["content-range"] == "0-0/*"
    [thread] = threads.json()
    assert set(thread) == set(THREADS["select"].split(","))
    assert thread["is_default"] is True

    messages = await http.get("/messages", params={**MESSAGES, "thread_id": f"eq.{thread['id']}"}, headers=ann.headers)
    assert messages.status_code == 200, messages.text
    rows = messages.json()
    assert [row["content"] for row in rows] == [
        "You said: and my dog is Rex",
        "and my dog is Rex",
        "You said: my cat is Miso",
        "my cat is Miso",
    ]
    # message_feedback's key is its message: one-to-one, an object or null.
    assert {row["id"]: row["message_feedback"] for row in rows if row["message_feedback"]} == {
        str(rated): {"rating": "up"}
    }
    assert messages.headers["content-range"] == "0-3/*"
    # The other way round, threads to messages is one-to-many: an array; messages to threads, many-to-one: an object.
    nested = await http.get("/threads", params={"select": "id,messages(content)"}, headers=ann.headers)
    assert sorted(m["content"] for m in nested.json()[0]["messages"]) == sorted(r["content"] for r in rows)
    up = await http.get("/messages", params={"select": "id,thread:threads(id)", "limit": "1"}, headers=ann.headers)
    assert up.json()[0]["thread"] == {"id": thread["id"]}

    # limit and offset, as PostgREST pages.
    page = await http.get(
        "/messages",
        params={"select": "content", "order": "created_at.asc,id.asc", "limit": "2", "offset": "1"},
        headers=ann.headers,
    )
    assert [row["content"] for row in page.json()] == ["You said: my cat is Miso", "and my dog is Rex"]
    assert page.headers["content-range"] == "1-2/*"

    # Bob sees his own rows only, even asking for Ann's thread by its id.
    assert (
        await http.get("/messages", params={**MESSAGES, "thread_id": f"eq.{thread['id']}"}, headers=bob.headers)
    ).json() == []
    bobs = await http.get("/messages", params=MESSAGES, headers=bob.headers)
    assert [row["content"] for row in bobs.json()] == ["You said: bob's secret", "bob's secret"]
    assert all(row["message_feedback"] is None for row in bobs.json())
    empty = await http.get("/messages", params={"select": "id", "thread_id": f"eq.{uuid.uuid4()}"}, headers=ann.headers)
    assert empty.headers["content-range"] == "*/*"


async def test_tokens_are_verified_and_roles_are_the_databases(
    http: httpx.AsyncClient, db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    ann = await person(database_url, signing_key)
    await a_turn(db, ann, "hello")

    # No token: anon, which may not read the table (revoked from anon): 401 with PostgREST's WWW-Authenticate.
    anon = await http.get("/messages", params=MESSAGES)
    assert error(anon, 401, "42501")["message"] == "permission denied for table messages"
    assert anon.headers["www-authenticate"] == "Bearer"

    def refused(response: httpx.Response, code: str, message: str) -> None:
        assert error(response, 401, code)["message"] == message
        assert response.headers["www-authenticate"] == f'Bearer error="invalid_token", error_description="{message}"'

    async def get(token: str) -> httpx.Response:
        return await http.get("/messages", params=MESSAGES, headers={"Authorization": f"Bearer {token}"})

    refused(await get("not-a-token"), "PGRST301", "Expected 3 parts in JWT; got 1")
    refused(await get("a.b.c"), "PGRST301", "JWT cryptographic operation failed")
    refused(await get(signing_key.access_token(ann.id, issuer=ISSUER, expires_in=-60)), "PGRST303", "JWT expired")
    other_key = SigningKey.generate().access_token(ann.id, issuer=ISSUER)
    refused(await get(other_key), "PGRST301", "No suitable key or wrong key type")
    unsigned = jwt.encode({"sub": str(ann.id), "role": "authenticated"}, key=None, algorithm="none")
    refused(await get(unsigned), "PGRST301", "Wrong or unsupported encoding algorithm")
    # Within PostgREST's 30 s of skew, a just-expired token still reads.
    assert (await get(signing_key.access_token(ann.id, issuer=ISSUER, expires_in=-10))).status_code == 200

    # The role claim is the database role, as the database allows it: a role that does not exist is 401 (22023),
    # one the login role may not become is 403, service_role bypasses row level security.
    missing = await get(signing_key.access_token(ann.id, issuer=ISSUER, role="superhero"))
    assert error(missing, 401, "22023")["message"] == 'role "superhero" does not exist'
    error(await get(signing_key.access_token(ann.id, issuer=ISSUER, role="postgres")), 403, "42501")
    bob = await person(database_url, signing_key)
    await a_turn(db, bob, "bob's")
    service = await get(signing_key.access_token(ann.id, issuer=ISSUER, role="service_role"))
    assert {row["content"] for row in service.json()} >= {"hello", "bob's"}

    # A legacy HS256 token signed with the project's JWT secret is accepted too.
    claims = {"sub": str(ann.id), "role": "authenticated", "exp": 4102444800}
    legacy = await get(jwt.encode(claims, HS256_SECRET, algorithm="HS256"))
    assert {row["content"] for row in legacy.json()} == {"hello", "You said: hello"}


async def test_requests_run_with_postgrests_transaction_settings(
    http: httpx.AsyncClient, db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    """What the request's transaction sees, read through a function: set before the double reads its schema."""
    await db.execute(
        """
        create function public.request_settings() returns json language sql stable as $$
          select json_build_object(
            'user', current_user, 'claims', current_setting('request.jwt.claims', true)::json,
            'uid', auth.uid(), 'legacy_sub', current_setting('request.jwt.claim.sub', true),
            'statement_timeout', current_setting('statement_timeout'),
            'read_only', current_setting('transaction_read_only'), 'search_path', current_setting('search_path'),
            'method', current_setting('request.method', true), 'path', current_setting('request.path', true),
            'origin', current_setting('request.headers', true)::json ->> 'origin')
        $$;
        grant execute on function public.request_settings() to anon, authenticated;
        """
    )
    ann = await person(database_url, signing_key)
    response = await http.post("/rpc/request_settings", json={}, headers={**ann.headers, "Origin": "http://web"})
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["user"] == "authenticated"
    assert seen["uid"] == str(ann.id) and seen["claims"]["sub"] == str(ann.id)
    assert seen["claims"]["role"] == "authenticated"
    assert seen["legacy_sub"] in (None, "")  # PostgREST >= 12 sets only request.jwt.claims
    assert seen["statement_timeout"] == "8s"  # the authenticated role's own setting (supabase_bootstrap.sql)
    assert seen["read_only"] == "on"  # a stable function: a read-only transaction
    assert seen["search_path"] == '"public", "extensions"'
    assert (seen["method"], seen["path"], seen["origin"]) == ("POST", "/rpc/request_settings", "http://web")
    assert response.headers["access-control-allow-origin"] == "*"

    anon = (await http.post("/rpc/request_settings", json={})).json()
    assert (anon["user"], anon["claims"], anon["uid"], anon["statement_timeout"]) == (
        "anon",
        {"role": "anon"},
        None,
        "3s",
    )


async def test_a_functions_own_statement_timeout_is_hoisted_as_postgrest_does(
    http: httpx.AsyncClient, db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    """A function's SET clause takes effect only once its statement (and the statement's timer) has started:
    PostgREST sets a called function's statement_timeout for the transaction first, so the function's own limit is
    the one that holds. The search function has 2 s (migration 20261130001300), the service's default."""
    search_config = await db.fetchval(
        "select proconfig from pg_proc where oid = $1::text::regprocedure",
        "public.search_messages(text, integer, real, uuid, uuid)",
    )
    assert "statement_timeout=2s" in search_config
    await db.execute(
        """
        create function public.slow_call() returns int language sql volatile set statement_timeout = '50ms'
          as $$ select 1 from pg_sleep(1) $$;
        grant execute on function public.slow_call() to authenticated;
        """
    )
    ann = await person(database_url, signing_key)
    cancelled = await http.post("/rpc/slow_call", json={}, headers=ann.headers)
    assert error(cancelled, 500, "57014")["message"] == "canceling statement due to statement timeout"


async def test_search_through_the_rpc(
    http: httpx.AsyncClient, db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    ann, bob = await person(database_url, signing_key), await person(database_url, signing_key)
    await a_turn(db, ann, "my cat is Miso")
    await a_turn(db, bob, "Miso is bob's cat too")

    found = await http.post("/rpc/search_messages", json={"query": "Miso", "result_limit": 20}, headers=ann.headers)
    assert found.status_code == 200, found.text
    hits = found.json()
    assert {hit["snippet"].replace("\ue000", "").replace("\ue001", "") for hit in hits} == {
        "my cat is Miso",
        "You said: my cat is Miso",
    }
    assert all("\ue000Miso\ue001" in hit["snippet"] for hit in hits)
    assert set(hits[0]) == {"id", "thread_id", "thread_title", "role", "created_at", "rank", "snippet"}

    # The function's own refusal (22023) is PostgREST's 400; an argument it does not take, PGRST202.
    empty = await http.post("/rpc/search_messages", json={"query": " ", "result_limit": 20}, headers=ann.headers)
    assert error(empty, 400, "22023")["message"] == "the search query is empty"
    too_many = await http.post("/rpc/search_messages", json={"query": "Miso", "result_limit": 500}, headers=ann.headers)
    error(too_many, 400, "22023")
    unknown = await http.post("/rpc/search_messages", json={"q": "Miso"}, headers=ann.headers)
    assert error(unknown, 404, "PGRST202")["message"] == (
        "Could not find the function public.search_messages(q) in the schema cache"
    )
    # anon may not execute it.
    error(await http.post("/rpc/search_messages", json={"query": "Miso"}), 401, "42501")
    error(await http.post("/rpc/search_messages", content=b"{not json", headers=ann.headers), 400, "PGRST102")


async def test_names_come_from_the_schema_and_values_are_parameters(
    http: httpx.AsyncClient, db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    ann = await person(database_url, signing_key)
    await a_turn(db, ann, "hello")
    h = ann.headers

    async def get(path: str, **params: str) -> httpx.Response:
        return await http.get(path, params=params, headers=h)

    assert error(await get("/nope"), 404, "PGRST205")["message"] == (
        "Could not find the table 'public.nope' in the schema cache"
    )
    error(await get("/user_profiles;drop table public.messages"), 404, "PGRST205")
    assert error(await get("/messages", select="id,nope"), 400, "42703")["message"] == (
        "column messages.nope does not exist"
    )
    error(await get("/messages", select='id,"content"'), 400, "PGRST127")
    error(await get("/messages", select="id;drop table public.messages"), 400, "PGRST100")
    error(await get("/messages", order="nope.desc"), 400, "42703")
    error(await get("/messages", order="id.sideways"), 400, "PGRST100")
    error(await get("/messages", nope="eq.1"), 400, "42703")
    # A value is a bind parameter, read as the column's type.
    bad = await get("/messages", select="id", thread_id="eq.'; drop table public.messages; --")
    assert error(bad, 400, "22P02")["message"].startswith("invalid input syntax for type uuid")
    assert await db.fetchval("select count(*) from public.messages") == 2
    assert [row["content"] for row in (await get("/messages", select="content", role="eq.user")).json()] == ["hello"]
    assert (await get("/messages", select="content", role="not.eq.user")).json() == [{"content": "You said: hello"}]
    assert len((await get("/messages", select="id", status="is.null")).json()) == 0

    relationship = await get("/messages", select="id,user_profiles_nope(id)")
    assert error(relationship, 400, "PGRST200")["message"] == (
        "Could not find a relationship between 'messages' and 'user_profiles_nope' in the schema cache"
    )
    # What the double does not implement is refused as PostgREST refuses what it lacks, never answered otherwise.
    for params in ({"content": "like.*hello*"}, {"or": "(role.eq.user)"}, {"select": "id::text"}):
        assert "double" in error(await get("/messages", **params), 400, "PGRST127")["details"]
    error(await http.delete("/messages", headers=h), 400, "PGRST127")
    error(await http.get("/messages", headers={**h, "Accept-Profile": "private"}), 406, "PGRST106")
    error(await get("/rpc"), 404, "PGRST205")
    error(await http.get("/a/b/c", headers=h), 404, "PGRST125")
    # Bounds.
    error(await get("/messages", select=",".join(["id"] * 200)), 400, "PGRST100")
    big = await http.post("/rpc/search_messages", content=b" " * 70_000, headers=h)
    assert big.status_code == 413


async def test_the_gateway_checks_the_api_key_and_serves_auth_on_the_same_origin(
    rest: PostgrestDouble, db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    auth = gotrue_double.create_app(database_url, SERVICE_KEY, signing_key, ISSUER)
    gateway = Gateway(auth, rest, [PUBLISHABLE_KEY])
    ann = await person(database_url, signing_key)
    await a_turn(db, ann, "hello")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://api") as api:
        url = "/rest/v1/messages"
        missing = await api.get(url, params=MESSAGES, headers=ann.headers)
        assert missing.status_code == 401
        assert missing.json() == {
            "message": "No API key found in request",
            "hint": "No `apikey` request header or url param was found.",
        }
        wrong = await api.get(url, params=MESSAGES, headers={**ann.headers, "apikey": "sb_publishable_other"})
        assert (wrong.status_code, wrong.json()["message"]) == (401, "Invalid API key")

        # supabase-js's headers: the key in apikey and the user's token as the bearer.
        signed_in = await api.get(url, params=MESSAGES, headers={**ann.headers, "apikey": PUBLISHABLE_KEY})
        assert [row["content"] for row in signed_in.json()] == ["You said: hello", "hello"]
        # Signed out, supabase-js sends the key as the bearer too: the gateway makes that anon, not a bad token.
        signed_out = {"apikey": PUBLISHABLE_KEY, "Authorization": f"Bearer {PUBLISHABLE_KEY}"}
        error(await api.get(url, params=MESSAGES, headers=signed_out), 401, "42501")
        # A browser's preflight carries no key; it gets PostgREST's CORS answer.
        preflight = await api.options(
            url,
            headers={
                "Origin": "http://web",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "apikey, authorization, accept-profile, x-client-info",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "apikey" in preflight.headers["access-control-allow-headers"]
        # Auth is on the same origin.
        assert (await api.get("/auth/v1/health")).json()["name"] == "GoTrue"
        jwks = (await api.get("/auth/v1/.well-known/jwks.json")).json()
        assert jwks == json.loads(json.dumps(signing_key.jwks()))
