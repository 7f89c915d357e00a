"""Contract and failure paths of our LiteLLM management client (and the Billing cache above it).

Requests are checked against what LiteLLM 1.106.2 reads; responses are built with LiteLLM's own pydantic
types and error machinery (``ProxyException`` as ``openai_exception_handler`` renders it), so a change in
either side's shape shows up here.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # importing litellm must not fetch prices

import litellm
from litellm.proxy._types import (
    GenerateKeyResponse,
    LiteLLM_SpendLogs,
    LiteLLM_UserTable,
    NewUserResponse,
    ProxyErrorTypes,
    ProxyException,
    UserInfoResponse,
)

from service.billing import budgets as billing_module
from service.billing.budgets import Billing, Budget, Prices
from service.clients.errors import UpstreamError
from service.clients.litellm import LiteLLMClient
from service.clients.retry import with_retries

BASE = "http://litellm.test:4000"
MASTER = "sk-master-test"
USER = "7f9c2a4e-0000-4000-8000-000000000001"
EMAIL = "ada@example.com"
INFO_URL = f"{BASE}/user/info?user_id={USER}"


# -- LiteLLM's real response bodies ----------------------------------------------------------------------


def proxy_error(status: int, detail: Any) -> dict[str, Any]:
    """What LiteLLM answers when an endpoint raises ``HTTPException(status, detail)``.

    ``handle_exception_on_proxy`` turns it into a ``ProxyException`` (message = ``str(detail)``), rendered by
    ``openai_exception_handler`` as ``{"error": exc.to_dict()}`` with the status code ``exc.code``.
    """
    exc = ProxyException(message=str(detail), type=ProxyErrorTypes.internal_server_error, param=None, code=status)
    return {"error": exc.to_dict()}


def user_info_body(*, spend: float = 0.0, max_budget: float | None = 5.0, reset: datetime | None = None) -> Any:
    """``GET /user/info`` for a known user: ``UserInfoResponse`` around the user row (password popped)."""
    row = LiteLLM_UserTable(
        user_id=USER,
        user_email=EMAIL,
        max_budget=max_budget,
        spend=spend,
        budget_duration="30d",
        budget_reset_at=reset or datetime(2025, 12, 21, 0, 0, tzinfo=UTC),
    ).model_dump()
    row.pop("password", None)
    return json.loads(UserInfoResponse(user_id=USER, user_info=row, keys=[], teams=[]).model_dump_json())


def new_user_body(key: str) -> Any:
    response = NewUserResponse(
        key=key, user_id=USER, max_budget=5.0, budget_duration="30d", user_email=EMAIL, token_id="hashed-token"
    )
    return json.loads(response.model_dump_json())


def generate_key_body(key: str) -> Any:
    return json.loads(GenerateKeyResponse(key=key, user_id=USER, token_id="hashed-token-2").model_dump_json())


def model_info_entry(name: str, model: str, **model_info: Any) -> dict[str, Any]:
    """One ``/model/info`` entry: the deployment, its ``model_info`` enriched with LiteLLM's cost map."""
    return {
        "model_name": name,
        "litellm_params": {"model": model},
        "model_info": {"id": f"id-{name}", "db_model": False, **model_info},
    }


def gpt_4o_mini_costs() -> dict[str, Any]:
    info = litellm.get_model_info("gpt-4o-mini")
    return {k: v for k, v in info.items() if k.endswith("_cost_per_token") or k in ("key", "litellm_provider")}


USER_NOT_FOUND = proxy_error(404, f"User {USER} not found")
USER_EXISTS = proxy_error(409, {"error": f"User with id {USER} already exists"})


@pytest.fixture
def client(http: httpx.AsyncClient) -> LiteLLMClient:
    return LiteLLMClient(http, BASE + "/", MASTER)


def assert_admin(request: httpx.Request) -> None:
    assert request.headers["authorization"] == f"Bearer {MASTER}"


# -- request shapes ----------------------------------------------------------------------------------------


def test_error_bodies_match_litellm_wire_format() -> None:
    # Guards the helpers above: this is byte for byte what LiteLLM 1.106.2 sends for a duplicate user.
    expected = {
        "error": {
            "message": f"{{'error': 'User with id {USER} already exists'}}",
            "type": "internal_server_error",
            "param": None,
            "code": "409",
        }
    }
    assert expected == USER_EXISTS


async def test_create_user_sends_litellm_new_user_request(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{BASE}/user/new", json=new_user_body("sk-user-1"))

    key = await client.create_user(USER, 5.0, "30d", EMAIL)

    assert key == "sk-user-1"
    request = httpx_mock.get_request()
    assert request is not None
    assert_admin(request)
    assert request.url.path == "/user/new"
    assert json.loads(request.content) == {
        "user_id": USER,
        "max_budget": 5.0,
        "budget_duration": "30d",
        "auto_create_key": True,
        "user_email": EMAIL,
    }


async def test_create_user_without_email_omits_user_email(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    # LiteLLM checks user_email for duplicates (case-insensitively): an empty one must not be sent.
    httpx_mock.add_response(method="POST", url=f"{BASE}/user/new", json=new_user_body("sk-user-1"))

    await client.create_user(USER, 2.5, "7d", "")

    request = httpx_mock.get_request()
    assert request is not None
    body = json.loads(request.content)
    assert "user_email" not in body
    assert body["max_budget"] == 2.5
    assert body["budget_duration"] == "7d"


async def test_generate_key_sends_user_id(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{BASE}/key/generate", json=generate_key_body("sk-user-2"))

    assert await client.generate_key(USER) == "sk-user-2"

    request = httpx_mock.get_request()
    assert request is not None
    assert_admin(request)
    assert json.loads(request.content) == {"user_id": USER}


async def test_user_info_queries_by_user_id_and_returns_the_body(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=INFO_URL, json=user_info_body(spend=1.25))

    info = await client.user_info(USER)

    assert info is not None
    assert info["user_id"] == USER
    assert info["user_info"]["spend"] == 1.25
    assert info["user_info"]["max_budget"] == 5.0
    request = httpx_mock.get_request()
    assert request is not None
    assert_admin(request)
    assert request.method == "GET"
    assert request.url.path == "/user/info"
    assert dict(request.url.params) == {"user_id": USER}


async def test_user_info_of_unknown_user_is_none(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, status_code=404, json=USER_NOT_FOUND)

    assert await client.user_info(USER) is None


async def test_user_info_with_empty_user_row_is_none(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, json={"user_id": USER, "user_info": None, "keys": [], "teams": []})

    assert await client.user_info(USER) is None


async def test_update_user_posts_fields(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{BASE}/user/update", json={"user_id": USER, "max_budget": 9.0})

    result = await client.update_user(USER, max_budget=9.0, budget_duration="30d")

    assert result == {"user_id": USER, "max_budget": 9.0}
    request = httpx_mock.get_request()
    assert request is not None
    assert_admin(request)
    assert json.loads(request.content) == {"user_id": USER, "max_budget": 9.0, "budget_duration": "30d"}


# -- ensure_user_key ----------------------------------------------------------------------------------------


async def test_ensure_user_key_creates_unknown_user(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, status_code=404, json=USER_NOT_FOUND)
    httpx_mock.add_response(method="POST", url=f"{BASE}/user/new", json=new_user_body("sk-new"))

    assert await client.ensure_user_key(USER, 5.0, "30d", EMAIL) == "sk-new"
    assert [r.url.path for r in httpx_mock.get_requests()] == ["/user/info", "/user/new"]


async def test_ensure_user_key_for_known_user_generates_a_key(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, json=user_info_body())
    httpx_mock.add_response(method="POST", url=f"{BASE}/key/generate", json=generate_key_body("sk-again"))

    assert await client.ensure_user_key(USER, 5.0, "30d", EMAIL) == "sk-again"
    assert [r.url.path for r in httpx_mock.get_requests()] == ["/user/info", "/key/generate"]


async def test_ensure_user_key_falls_back_to_key_generate_on_409(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    # The user was created concurrently between our /user/info and /user/new.
    httpx_mock.add_response(url=INFO_URL, status_code=404, json=USER_NOT_FOUND)
    httpx_mock.add_response(method="POST", url=f"{BASE}/user/new", status_code=409, json=USER_EXISTS)
    httpx_mock.add_response(url=INFO_URL, json=user_info_body())
    httpx_mock.add_response(method="POST", url=f"{BASE}/key/generate", json=generate_key_body("sk-fallback"))

    assert await client.ensure_user_key(USER, 5.0, "30d", EMAIL) == "sk-fallback"
    assert [r.url.path for r in httpx_mock.get_requests()] == ["/user/info", "/user/new", "/user/info", "/key/generate"]


async def test_ensure_user_key_reraises_409_when_user_still_unknown(
    client: LiteLLMClient, httpx_mock: HTTPXMock
) -> None:
    # 409 on the *email* (another user owns it): the user id is still unknown, so this is a real failure.
    email_taken = proxy_error(409, {"error": f"User with email {EMAIL} already exists"})
    httpx_mock.add_response(url=INFO_URL, status_code=404, json=USER_NOT_FOUND, is_reusable=True)
    httpx_mock.add_response(method="POST", url=f"{BASE}/user/new", status_code=409, json=email_taken)

    with pytest.raises(UpstreamError) as caught:
        await client.ensure_user_key(USER, 5.0, "30d", EMAIL)

    assert caught.value.status == 409
    assert caught.value.transient is False
    assert "already exists" in str(caught.value)
    assert len(httpx_mock.get_requests()) == 3


async def test_ensure_user_key_does_not_mask_transient_create_failure(
    client: LiteLLMClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=INFO_URL, status_code=404, json=USER_NOT_FOUND)
    httpx_mock.add_response(method="POST", url=f"{BASE}/user/new", status_code=503, text="upstream unavailable")

    with pytest.raises(UpstreamError) as caught:
        await client.ensure_user_key(USER, 5.0, "30d", EMAIL)

    assert caught.value.transient is True
    assert caught.value.status == 503
    assert len(httpx_mock.get_requests()) == 2  # no second /user/info, no /key/generate


# -- delete ------------------------------------------------------------------------------------------------


async def test_delete_user_posts_user_ids(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, json=user_info_body())
    httpx_mock.add_response(method="POST", url=f"{BASE}/user/delete", json=1)  # prisma's delete_many count

    await client.delete_user(USER)

    requests = httpx_mock.get_requests()
    assert [r.url.path for r in requests] == ["/user/info", "/user/delete"]
    assert_admin(requests[1])
    assert json.loads(requests[1].content) == {"user_ids": [USER]}


async def test_delete_of_unknown_user_is_not_an_error(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, status_code=404, json=USER_NOT_FOUND)

    assert await client.delete_user(USER) is None
    assert [r.url.path for r in httpx_mock.get_requests()] == ["/user/info"]  # no /user/delete sent


# -- failures ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
async def test_server_errors_are_transient(client: LiteLLMClient, httpx_mock: HTTPXMock, status: int) -> None:
    httpx_mock.add_response(url=INFO_URL, status_code=status, json=proxy_error(status, "Database not connected"))

    with pytest.raises(UpstreamError) as caught:
        await client.user_info(USER)

    assert caught.value.transient is True
    assert caught.value.status == status
    assert caught.value.service == "litellm"


@pytest.mark.parametrize("status", [401, 403, 409, 422])
async def test_client_errors_are_final(client: LiteLLMClient, httpx_mock: HTTPXMock, status: int) -> None:
    httpx_mock.add_response(
        method="POST", url=f"{BASE}/key/generate", status_code=status, json=proxy_error(status, "no")
    )

    with pytest.raises(UpstreamError) as caught:
        await client.generate_key(USER)

    assert caught.value.transient is False
    assert caught.value.status == status
    assert f"HTTP {status}" in str(caught.value)


@pytest.mark.parametrize(
    "exc",
    [httpx.ReadTimeout("timed out"), httpx.ConnectTimeout("timed out"), httpx.ConnectError("refused")],
    ids=["read-timeout", "connect-timeout", "connect-error"],
)
async def test_transport_failures_are_transient(
    client: LiteLLMClient, httpx_mock: HTTPXMock, exc: httpx.HTTPError
) -> None:
    httpx_mock.add_exception(exc, url=INFO_URL)

    with pytest.raises(UpstreamError) as caught:
        await client.user_info(USER)

    assert caught.value.transient is True
    assert caught.value.status is None
    assert type(exc).__name__ in str(caught.value)
    assert caught.value.__cause__ is exc


async def test_real_connection_refused_is_transient(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = LiteLLMClient(http, f"http://127.0.0.1:{port}", MASTER)

    with pytest.raises(UpstreamError) as caught:
        await client.model_info()

    assert caught.value.transient is True
    assert "ConnectError" in str(caught.value)


async def test_non_json_body_is_an_upstream_error(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    # e.g. a proxy or load balancer answering 200 with an HTML page
    httpx_mock.add_response(method="POST", url=f"{BASE}/key/generate", html="<html>Gateway login</html>")

    with pytest.raises(UpstreamError) as caught:
        await client.generate_key(USER)

    assert "not JSON" in str(caught.value)
    assert caught.value.status == 200


@pytest.mark.parametrize(
    "body",
    [{"user_id": USER, "key": ""}, {"user_id": USER, "key": None}, {"user_id": USER}, ["sk-in-a-list"]],
    ids=["empty", "null", "missing", "not-an-object"],
)
async def test_response_without_key_is_a_final_error(client: LiteLLMClient, httpx_mock: HTTPXMock, body: Any) -> None:
    httpx_mock.add_response(method="POST", url=f"{BASE}/user/new", json=body)

    with pytest.raises(UpstreamError) as caught:
        await client.create_user(USER, 5.0, "30d", None)

    assert caught.value.transient is False
    assert "no key" in str(caught.value)


async def test_with_retries_recovers_from_two_503s(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, status_code=503, json=proxy_error(503, "busy"))
    httpx_mock.add_response(url=INFO_URL, status_code=503, json=proxy_error(503, "busy"))
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=0.5))

    info = await with_retries(lambda: client.user_info(USER), attempts=3, base=0.001)

    assert info is not None
    assert info["user_info"]["spend"] == 0.5
    assert len(httpx_mock.get_requests()) == 3


# -- model info and health ---------------------------------------------------------------------------------


async def test_model_info_returns_data_entries(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    entry = model_info_entry("gpt-4o-mini", "openai/gpt-4o-mini", **gpt_4o_mini_costs())
    httpx_mock.add_response(method="GET", url=f"{BASE}/model/info", json={"data": [entry]})

    assert await client.model_info() == [entry]
    request = httpx_mock.get_request()
    assert request is not None
    assert_admin(request)


@pytest.mark.parametrize("body", [{"data": None}, {}, [], {"data": "oops"}])
async def test_model_info_without_a_list_is_empty(client: LiteLLMClient, httpx_mock: HTTPXMock, body: Any) -> None:
    httpx_mock.add_response(url=f"{BASE}/model/info", json=body)

    assert await client.model_info() == []


async def test_health_probes_liveliness(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=f"{BASE}/health/liveliness", json="I'm alive!")
    httpx_mock.add_response(method="GET", url=f"{BASE}/health/liveliness", status_code=503)

    up = await client.health()
    down = await client.health()

    assert up["litellm"]["ok"] is True
    assert "error" not in up["litellm"]
    assert down["litellm"] == {"ok": False, "latency_ms": down["litellm"]["latency_ms"], "error": "HTTP 503"}


def test_openai_base_url(client: LiteLLMClient) -> None:
    assert client.openai_base_url == f"{BASE}/v1"  # built from a base URL with a trailing slash


# -- Billing -----------------------------------------------------------------------------------------------


def test_budget_math() -> None:
    assert Budget(spend=1.25, max_budget=5.0, budget_duration="30d", budget_reset_at=None).remaining == 3.75
    assert Budget(spend=1.25, max_budget=5.0, budget_duration=None, budget_reset_at=None).exceeded is False
    at_limit = Budget(spend=5.0, max_budget=5.0, budget_duration=None, budget_reset_at=None)
    assert at_limit.exceeded is True
    assert at_limit.remaining == 0.0
    over = Budget(spend=7.5, max_budget=5.0, budget_duration=None, budget_reset_at=None)
    assert over.exceeded is True
    assert over.remaining == 0.0  # never negative
    unlimited = Budget(spend=1e6, max_budget=None, budget_duration=None, budget_reset_at=None)
    assert unlimited.exceeded is False
    assert unlimited.remaining is None
    zero = Budget(spend=0.0, max_budget=0.0, budget_duration=None, budget_reset_at=None)
    assert zero.exceeded is True


async def test_budget_is_read_from_user_info(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    reset = datetime(2025, 12, 21, 0, 0, tzinfo=UTC)
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=4.5, max_budget=5.0, reset=reset))

    budget = await Billing(client).budget(USER)

    assert budget == Budget(spend=4.5, max_budget=5.0, budget_duration="30d", budget_reset_at="2025-12-21T00:00:00Z")
    assert budget.remaining == pytest.approx(0.5)
    assert budget.exceeded is False


async def test_budget_over_limit_is_exceeded(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=5.0000001, max_budget=5.0))

    budget = await Billing(client).budget(USER)

    assert budget is not None
    assert budget.exceeded is True
    assert budget.remaining == 0.0


async def test_budget_without_max_budget_is_unlimited(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=3.0, max_budget=None))

    budget = await Billing(client).budget(USER)

    assert budget is not None
    assert budget.max_budget is None
    assert budget.exceeded is False


async def test_budget_of_unknown_user_is_none(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, status_code=404, json=USER_NOT_FOUND)

    assert await Billing(client).budget(USER) is None


async def test_budget_is_cached(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=1.0))
    billing = Billing(client)

    first = await billing.budget(USER)
    second = await billing.budget(USER)

    assert first is not None
    assert second == first
    assert len(httpx_mock.get_requests()) == 1


async def test_fresh_budget_bypasses_the_cache(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=1.0))
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=2.0))
    billing = Billing(client)

    first = await billing.budget(USER)
    fresh = await billing.budget(USER, fresh=True)
    cached = await billing.budget(USER)  # the fresh answer replaced the cached one

    assert first is not None and first.spend == 1.0
    assert fresh is not None and fresh.spend == 2.0
    assert cached == fresh
    assert len(httpx_mock.get_requests()) == 2


async def test_a_turns_cost_is_added_to_the_cached_budget(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=9.5, max_budget=10.0))
    billing = Billing(client)

    await billing.budget(USER)
    billing.add_spend(USER, 0.75)
    budget = await billing.budget(USER)

    # No second call to LiteLLM, and the cached view already knows the budget is used up.
    assert budget is not None and budget.spend == 10.25 and budget.exceeded
    assert len(httpx_mock.get_requests()) == 1
    billing.add_spend("someone-not-cached", 1.0)  # nothing cached: nothing to update


async def test_a_stale_budget_is_answered_from_the_cache_while_one_refresh_runs(
    client: LiteLLMClient, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(billing_module, "BUDGET_TTL_SECONDS", 0.0)
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=1.0))
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=2.0))
    billing = Billing(client)

    await billing.budget(USER)
    stale = await asyncio.gather(*(billing.budget(USER) for _ in range(3)))  # no wait for LiteLLM
    await asyncio.gather(*billing._refreshing.values())
    monkeypatch.setattr(billing_module, "BUDGET_TTL_SECONDS", 60.0)
    refreshed = await billing.budget(USER)

    assert [b.spend for b in stale if b] == [1.0, 1.0, 1.0]
    assert refreshed is not None and refreshed.spend == 2.0
    assert len(httpx_mock.get_requests()) == 2  # one refresh for the three stale answers


async def test_a_budget_too_old_to_serve_is_fetched_before_answering(
    client: LiteLLMClient, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(billing_module, "BUDGET_TTL_SECONDS", 0.0)
    monkeypatch.setattr(billing_module, "BUDGET_MAX_STALE_SECONDS", 0.0)
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=1.0))
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=2.0))
    billing = Billing(client)

    await billing.budget(USER)
    budget = await billing.budget(USER)

    assert budget is not None and budget.spend == 2.0
    assert len(httpx_mock.get_requests()) == 2


async def test_a_failed_background_refresh_keeps_the_cached_budget(
    client: LiteLLMClient, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(billing_module, "BUDGET_TTL_SECONDS", 0.0)
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=1.0))
    httpx_mock.add_response(url=INFO_URL, status_code=500, json=proxy_error(500, "Database not connected"))
    billing = Billing(client)

    await billing.budget(USER)
    await billing.budget(USER)
    await asyncio.gather(*billing._refreshing.values())  # the failure stays inside the refresh
    monkeypatch.setattr(billing_module, "BUDGET_TTL_SECONDS", 60.0)
    budget = await billing.budget(USER)

    assert budget is not None and budget.spend == 1.0


async def test_budget_failure_is_raised_not_cached(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=INFO_URL, status_code=500, json=proxy_error(500, "Database not connected"))
    httpx_mock.add_response(url=INFO_URL, json=user_info_body(spend=1.5))
    billing = Billing(client)

    with pytest.raises(UpstreamError):
        await billing.budget(USER)
    budget = await billing.budget(USER)

    assert budget is not None and budget.spend == 1.5


async def test_prices_table_from_model_info(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    costs = gpt_4o_mini_costs()
    entries = [
        model_info_entry("gpt-4o-mini", "openai/gpt-4o-mini", **costs),
        model_info_entry("free-local", "openai/local", input_cost_per_token=0.0, output_cost_per_token=None),
        model_info_entry("unpriced", "openai/custom", input_cost_per_token=None),
        {"model_name": "no-info", "litellm_params": {"model": "openai/x"}, "model_info": None},
    ]
    httpx_mock.add_response(method="GET", url=f"{BASE}/model/info", json={"data": entries})
    billing = Billing(client)

    mini = await billing.prices("gpt-4o-mini")
    free = await billing.prices("free-local")

    expected_in = Decimal(str(costs["input_cost_per_token"]))
    expected_out = Decimal(str(costs["output_cost_per_token"]))
    assert expected_in == Decimal("1.5E-7")  # LiteLLM's bundled cost map for gpt-4o-mini
    assert expected_out == Decimal("6E-7")
    assert mini == Prices(expected_in, expected_out)
    assert free == Prices(Decimal("0.0"), Decimal("0"))
    assert await billing.prices("unpriced") is None
    assert await billing.prices("no-info") is None
    assert await billing.prices("not-a-model") is None
    assert len(httpx_mock.get_requests()) == 1  # one /model/info for all lookups


async def test_prices_refresh_after_ttl(
    client: LiteLLMClient, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(billing_module, "PRICES_TTL_SECONDS", -1.0)
    httpx_mock.add_response(url=f"{BASE}/model/info", json={"data": []})
    httpx_mock.add_response(
        url=f"{BASE}/model/info",
        json={"data": [model_info_entry("m", "openai/m", input_cost_per_token=1e-6, output_cost_per_token=2e-6)]},
    )
    billing = Billing(client)

    assert await billing.prices("m") is None
    assert await billing.prices("m") == Prices(Decimal("0.000001"), Decimal("0.000002"))


def test_cost_is_exact_decimal() -> None:
    prices = Prices(Decimal(str(1.5e-07)), Decimal(str(6e-07)))

    cost = prices.cost(prompt_tokens=1234, completion_tokens=56)

    assert isinstance(cost, Decimal)
    assert cost == Decimal("0.0001851") + Decimal("0.0000336")
    assert cost == Decimal("0.0002187")  # exact, no float rounding
    assert prices.cost(0, 0) == 0
    # float arithmetic would not be exact here: 3 * 0.1 != 0.3
    assert Prices(Decimal("0.1"), Decimal("0")).cost(3, 0) == Decimal("0.3")


# -- spend records (reconciliation) ----------------------------------------------------------------------


def spend_log_row(request_id: str, spend: float, start: datetime) -> dict[str, Any]:
    """A ``GET /spend/logs?summarize=false`` row, as LiteLLM 1.106.2 serialises a ``LiteLLM_SpendLogs``."""
    row = LiteLLM_SpendLogs(
        request_id=request_id,
        api_key="88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        model="gpt-4o-mini",
        call_type="acompletion",
        spend=spend,
        total_tokens=120,
        prompt_tokens=100,
        completion_tokens=20,
        startTime=start,
        endTime=start,
        user="letta-user",
        metadata="{}",
        messages=None,
        response=None,
    )
    return json.loads(row.model_dump_json())


async def test_spend_logs_asks_for_one_keys_rows_by_its_hash_and_whole_days(
    client: LiteLLMClient, httpx_mock: HTTPXMock
) -> None:
    start = datetime(2026, 11, 30, 6, 0, 1, 250000, tzinfo=UTC)
    rows = [spend_log_row("chatcmpl-2", 0.0002, start), spend_log_row("chatcmpl-1", 0.0001, start)]
    httpx_mock.add_response(method="GET", json=rows)

    got = await client.spend_logs("ab" * 32, date(2026, 11, 29), date(2026, 11, 30))

    assert [r["request_id"] for r in got] == ["chatcmpl-2", "chatcmpl-1"]
    request = httpx_mock.get_request()
    assert request is not None
    assert_admin(request)
    assert request.url.path == "/spend/logs"
    # end_date is read as that day's midnight by LiteLLM: the day after covers the whole last day.
    assert dict(request.url.params) == {
        "api_key": "ab" * 32,
        "start_date": "2026-11-29",
        "end_date": "2026-12-01",
        "summarize": "false",
    }


async def test_spend_logs_failure_is_an_upstream_error(client: LiteLLMClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", status_code=500, json=proxy_error(500, "db down"))

    with pytest.raises(UpstreamError) as caught:
        await client.spend_logs("ab" * 32, date(2026, 11, 29), date(2026, 11, 30))

    assert caught.value.transient and caught.value.status == 500
