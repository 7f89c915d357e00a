"""LiteLLM proxy management API (master key): users, keys, budgets, model prices.

Shapes follow LiteLLM 1.106.2 (``litellm/proxy/management_endpoints/internal_user_endpoints.py``).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx

from service.clients.errors import UpstreamError
from service.clients.http import probe

SERVICE = "litellm"


class LiteLLMClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, master_key: str) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {master_key}"}

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, f"{self.base_url}{path}", headers=self._headers, **kwargs)
        except httpx.HTTPError as exc:
            raise UpstreamError.from_transport(SERVICE, exc) from exc
        if response.status_code >= 400:
            raise UpstreamError.from_response(SERVICE, response)
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamError(SERVICE, "response is not JSON", status=response.status_code, transient=True) from exc

    @property
    def openai_base_url(self) -> str:
        """The OpenAI-compatible endpoint Letta calls with each user's key."""
        return f"{self.base_url}/v1"

    async def user_info(self, user_id: str) -> dict[str, Any] | None:
        """``GET /user/info``; None when LiteLLM does not know the user."""
        try:
            body = await self._request("GET", "/user/info", params={"user_id": user_id})
        except UpstreamError as exc:
            if exc.status in (400, 404):
                return None
            raise
        info = body.get("user_info") if isinstance(body, dict) else None
        return body if isinstance(info, dict) and info else None

    async def create_user(self, user_id: str, max_budget: float, budget_duration: str, email: str | None) -> str:
        """``POST /user/new``: the user with its budget and a first key; returns that key."""
        payload: dict[str, Any] = {
            "user_id": user_id,
            "max_budget": max_budget,
            "budget_duration": budget_duration,
            "auto_create_key": True,
        }
        if email:
            payload["user_email"] = email
        body = await self._request("POST", "/user/new", json=payload)
        return _key_from(body)

    async def generate_key(self, user_id: str) -> str:
        """``POST /key/generate`` for an existing user (a key lost before we stored it cannot be read back)."""
        body = await self._request("POST", "/key/generate", json={"user_id": user_id})
        return _key_from(body)

    async def ensure_user_key(self, user_id: str, max_budget: float, budget_duration: str, email: str | None) -> str:
        """A usable key for the user, creating the user if LiteLLM does not know it yet."""
        if await self.user_info(user_id) is None:
            try:
                return await self.create_user(user_id, max_budget, budget_duration, email)
            except UpstreamError as exc:
                # Created concurrently (or by an earlier attempt that we never heard back from).
                if exc.transient or await self.user_info(user_id) is None:
                    raise
        return await self.generate_key(user_id)

    async def update_user(self, user_id: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("POST", "/user/update", json={"user_id": user_id, **fields})
        return result

    async def delete_user(self, user_id: str) -> None:
        """``POST /user/delete``; a user LiteLLM does not know is already deleted."""
        if await self.user_info(user_id) is None:
            return
        await self._request("POST", "/user/delete", json={"user_ids": [user_id]})

    async def model_info(self) -> list[dict[str, Any]]:
        body = await self._request("GET", "/model/info")
        data = body.get("data") if isinstance(body, dict) else None
        return data if isinstance(data, list) else []

    async def spend_logs(self, key_hash: str, start: date, end: date) -> list[dict[str, Any]]:
        """``GET /spend/logs``: LiteLLM's per-request spend records of one key (its sha256, as LiteLLM stores
        it, so the key itself is never in a URL) for the UTC days ``start`` to ``end``, both included."""
        params = {
            "api_key": key_hash,
            "start_date": start.isoformat(),
            # LiteLLM reads end_date as that day's midnight: the day after includes the whole of ``end``.
            "end_date": (end + timedelta(days=1)).isoformat(),
            "summarize": "false",
        }
        body = await self._request("GET", "/spend/logs", params=params)
        return [row for row in body if isinstance(row, dict)] if isinstance(body, list) else []

    async def health(self) -> dict[str, Any]:
        return await probe(self._http, f"{self.base_url}/health/liveliness", SERVICE)


def _key_from(body: Any) -> str:
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not key:
        raise UpstreamError(SERVICE, "response carries no key", transient=False)
    return key
