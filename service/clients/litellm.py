"""LiteLLM proxy management API (master key): users, keys, budgets, model prices.

Shapes follow LiteLLM 1.106.2 (``litellm/proxy/management_endpoints/internal_user_endpoints.py``).
"""

from __future__ import annotations

from typing import Any

import httpx

from service.clients.base import UpstreamError, error_from_exception, error_from_response, probe

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
            raise error_from_exception(SERVICE, exc) from exc
        if response.status_code >= 400:
            raise error_from_response(SERVICE, response)
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamError(SERVICE, "response is not JSON", status=response.status_code, transient=True) from exc

    @property
    def openai_base_url(self) -> str:
        """The OpenAI-compatible endpoint Letta calls with each user's key."""
        return f"{self.base_url}/v1"

    async def health(self) -> dict[str, Any]:
        return await probe(self._http, f"{self.base_url}/health/liveliness", SERVICE)
