"""The LiteLLM double's keys of their own (``/key/generate``), limited to models and with a budget, against
LiteLLM 1.106.2 itself: its pydantic types, its Prisma schema and its error shapes (``ProxyException``).

What the local stack gives Letta for embeddings is such a key (devstack/stack.py): it must be refused a chat
model and stop at its budget as a real LiteLLM key does.
"""

from __future__ import annotations

import ast
import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # importing litellm must not fetch prices

import litellm
import openai
from litellm.proxy._types import GenerateKeyResponse, LiteLLM_VerificationToken, ProxyErrorTypes, ProxyException

from devstack.doubles.litellm_double import DoubleSettings, create_app

MASTER = "sk-master-dev"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
EMBEDDING_MODEL = "text-embedding-3-small"
EMBEDDING_KEY = "sk-letta-embeddings-0123456789"


def model_access_denied_message(model: str) -> str:
    """LiteLLM's own sentence for a key refused a model (proxy/auth/model_access_denied.py), read from its source:
    that module imports FastAPI, which the service's environment does not install."""
    source = Path(litellm.__file__).parent / "proxy" / "auth" / "model_access_denied.py"
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "MODEL_ACCESS_DENIED_CLIENT_MESSAGE":
            assert node.value is not None
            template: str = ast.literal_eval(node.value)
            return template.format(model=model)
    raise AssertionError("MODEL_ACCESS_DENIED_CLIENT_MESSAGE not found")


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(DoubleSettings())) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sdk(client: httpx.AsyncClient, key: str) -> openai.AsyncOpenAI:
    """The OpenAI SDK, as Letta uses it for embeddings."""
    return openai.AsyncOpenAI(api_key=key, base_url="http://testserver.local/v1", http_client=client, max_retries=0)


async def embedding_key(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    """The key devstack/stack.py makes for Letta: one model, a budget of its own."""
    body = {
        "key": EMBEDDING_KEY,
        "key_alias": "letta-embeddings",
        "models": [EMBEDDING_MODEL],
        "max_budget": 5.0,
        "budget_duration": "30d",
        "key_type": "llm_api",
        **fields,
    }
    response = await client.post("/key/generate", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    generated: dict[str, Any] = response.json()
    return generated


def chat(model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def test_key_generate_returns_a_generate_key_response(client: AsyncTestClient[Any]) -> None:
    body = await embedding_key(client, metadata={"purpose": "embeddings"})

    assert set(body) == set(GenerateKeyResponse.model_fields)  # FastAPI dumps the full model, nulls included
    # generate_key_fn answers the key itself in `key` and its hash in `token` and `token_id` (re-validating that
    # answer would copy `token` into `key`: GenerateKeyResponse.set_model_info).
    hashed = hashlib.sha256(EMBEDDING_KEY.encode()).hexdigest()
    assert body["key"] == EMBEDDING_KEY and body["token"] == body["token_id"] == hashed
    parsed = GenerateKeyResponse.model_validate(body)
    assert parsed.key_name == "sk-...6789" and parsed.key_alias == "letta-embeddings"
    assert parsed.models == [EMBEDDING_MODEL] and parsed.max_budget == 5.0 and parsed.budget_duration == "30d"
    assert parsed.user_id is None and parsed.spend == 0 and parsed.metadata == {"purpose": "embeddings"}
    assert parsed.key_type == "llm_api" and parsed.allowed_routes == ["llm_api_routes"]

    info = (await client.get("/key/info", params={"key": EMBEDDING_KEY}, headers=ADMIN)).json()["info"]
    LiteLLM_VerificationToken.model_validate({**info, "token": hashed})
    assert info["models"] == [EMBEDDING_MODEL] and info["max_budget"] == 5.0
    assert info["budget_reset_at"] is not None and info["user_id"] is None


async def test_a_generated_key_without_a_custom_value_is_litellm_shaped(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/key/generate", json={}, headers=ADMIN)

    body = response.json()
    assert response.status_code == 200 and body["key"].startswith("sk-") and len(body["key"]) == 25
    assert body["models"] == [] and body["max_budget"] is None and body["key_type"] == "default"
    assert body["allowed_routes"] == []


async def test_key_generate_refusals(client: AsyncTestClient[Any]) -> None:
    await embedding_key(client)
    user_key = (await client.post("/key/generate", json={}, headers=ADMIN)).json()["key"]

    alias_taken = await client.post(
        "/key/generate", json={"key": "sk-another-key-0123456789", "key_alias": "letta-embeddings"}, headers=ADMIN
    )
    not_sk = await client.post("/key/generate", json={"key": "letta-embeddings-key"}, headers=ADMIN)
    too_short = await client.post("/key/generate", json={"key": "sk-short"}, headers=ADMIN)
    negative = await client.post("/key/generate", json={"max_budget": -1}, headers=ADMIN)
    not_admin = await client.post("/key/generate", json={}, headers=bearer(user_key))

    assert alias_taken.status_code == 400
    assert alias_taken.json() == {
        "error": ProxyException(
            message="Key with alias 'letta-embeddings' already exists. "
            "Unique key aliases across all keys are required.",
            type=ProxyErrorTypes.bad_request_error,
            param="key_alias",
            code=400,
        ).to_dict()
    }
    assert not_sk.status_code == 400 and not_sk.json()["error"]["message"] == str(
        {"error": "Invalid key format. LiteLLM Virtual Key must start with 'sk-'. Received: lett****-key"}
    )
    assert too_short.status_code == 400 and "at least 16 characters" in too_short.json()["error"]["message"]
    assert negative.status_code == 400 and "non-negative finite number" in negative.json()["error"]["message"]
    assert not_admin.status_code == 401
    assert not_admin.json()["error"]["type"] == ProxyErrorTypes.auth_error.value


async def test_an_existing_custom_key_is_kept_as_it_is(client: AsyncTestClient[Any]) -> None:
    """Prisma's upsert with an empty update: generating a key that exists changes nothing stored."""
    first = await embedding_key(client)
    await client.post("/_double/spend", json={"key": EMBEDDING_KEY, "spend": 1.25}, headers=ADMIN)

    again = await client.post(
        "/key/generate", json={"key": EMBEDDING_KEY, "models": [], "max_budget": 100}, headers=ADMIN
    )

    assert again.status_code == 200 and again.json()["created_at"] == first["created_at"]
    info = (await client.get("/key/info", params={"key": EMBEDDING_KEY}, headers=ADMIN)).json()["info"]
    assert info["models"] == [EMBEDDING_MODEL] and info["max_budget"] == 5.0 and info["spend"] == 1.25


async def test_a_key_limited_to_the_embedding_model_cannot_chat(client: AsyncTestClient[Any]) -> None:
    await embedding_key(client)
    api = sdk(client, EMBEDDING_KEY)

    embedded = await api.embeddings.create(model=EMBEDDING_MODEL, input=["my passport number ends in 42"])
    refused = await client.post("/v1/chat/completions", json=chat(), headers=bearer(EMBEDDING_KEY))
    with pytest.raises(openai.PermissionDeniedError):
        await api.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    listed = await api.models.list()

    assert len(embedded.data[0].embedding) == 1536
    assert refused.status_code == 403
    assert refused.json() == {
        "error": ProxyException(
            message=model_access_denied_message("gpt-4o-mini"),
            type=ProxyErrorTypes.key_model_access_denied,
            param="model",
            code=403,
        ).to_dict()
    }
    assert [m.id for m in listed.data] == [EMBEDDING_MODEL]
    log = (await client.get("/_double/requests", headers=ADMIN)).json()
    assert [(e["path"], e["status_code"]) for e in log] == [
        ("/v1/embeddings", 200),
        ("/v1/chat/completions", 403),
        ("/v1/chat/completions", 403),
    ]
    info = (await client.get("/key/info", params={"key": EMBEDDING_KEY}, headers=ADMIN)).json()["info"]
    assert info["spend"] == pytest.approx(2e-08 * embedded.usage.prompt_tokens)  # the refused calls cost nothing


async def test_a_key_at_its_budget_is_refused_with_litellm_budget_error(client: AsyncTestClient[Any]) -> None:
    await embedding_key(client, max_budget=1e-6)
    api = sdk(client, EMBEDDING_KEY)

    await api.embeddings.create(model=EMBEDDING_MODEL, input=["word " * 60])  # 60+ tokens: over 1e-6
    spend = (await client.get("/key/info", params={"key": EMBEDDING_KEY}, headers=ADMIN)).json()["info"]["spend"]
    assert spend >= 1e-6  # the call that crosses the budget still succeeds, like in LiteLLM
    refused = await client.post(
        "/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": "again"}, headers=bearer(EMBEDDING_KEY)
    )

    assert refused.status_code == litellm.budget_exceeded_status_code == 422
    # auth_checks.virtual_key_max_budget_check: "Key=<alias> (<masked key name>)".
    assert refused.json() == {
        "error": ProxyException(
            message=f"Budget has been exceeded! Key=letta-embeddings (sk-...6789) Current cost: {spend}, "
            "Max budget: 1e-06",
            type=ProxyErrorTypes.budget_exceeded,
            param=None,
            code=422,
        ).to_dict()
    }


async def test_a_wrong_model_is_refused_before_the_budget_is_looked_at(client: AsyncTestClient[Any]) -> None:
    """The key's models are checked first in LiteLLM's auth (enforce_key_and_fallback_model_access), then its
    budget."""
    await embedding_key(client, max_budget=1.0)
    await client.post("/_double/spend", json={"key": EMBEDDING_KEY, "spend": 1.0}, headers=ADMIN)

    wrong_model = await client.post("/v1/chat/completions", json=chat(), headers=bearer(EMBEDDING_KEY))
    right_model = await client.post(
        "/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": "x"}, headers=bearer(EMBEDDING_KEY)
    )

    assert wrong_model.status_code == 403 and right_model.status_code == 422


async def test_a_key_budget_resets_when_its_window_ends() -> None:
    now = [datetime(2026, 3, 10, 15, 30, tzinfo=UTC)]
    async with AsyncTestClient(app=create_app(DoubleSettings(clock=lambda: now[0]))) as client:
        await embedding_key(client, max_budget=1.0, budget_duration="1d")
        await client.post("/_double/spend", json={"key": EMBEDDING_KEY, "spend": 1.0}, headers=ADMIN)
        body = {"model": EMBEDDING_MODEL, "input": "x"}
        assert (await client.post("/v1/embeddings", json=body, headers=bearer(EMBEDDING_KEY))).status_code == 422

        now[0] = datetime(2026, 3, 11, 0, 0, 1, tzinfo=UTC)  # past the next midnight
        response = await client.post("/v1/embeddings", json=body, headers=bearer(EMBEDDING_KEY))

        assert response.status_code == 200
        info = (await client.get("/key/info", params={"key": EMBEDDING_KEY}, headers=ADMIN)).json()["info"]
        assert info["spend"] == float(response.headers["x-litellm-response-cost"])
        assert info["budget_reset_at"].startswith("2026-03-12T00:00:00")


async def test_user_keys_keep_calling_every_model(client: AsyncTestClient[Any]) -> None:
    """A user's key from /user/new has no model list (the service sets none): every model stays open to it."""
    user = (await client.post("/user/new", json={"user_id": "alice"}, headers=ADMIN)).json()

    chatted = await client.post("/v1/chat/completions", json=chat("gpt-4"), headers=bearer(user["key"]))
    embedded = await client.post(
        "/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": "x"}, headers=bearer(user["key"])
    )

    assert chatted.status_code == embedded.status_code == 200
