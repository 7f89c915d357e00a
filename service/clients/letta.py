"""Letta server API."""

from __future__ import annotations

from typing import Any

import httpx

from service.clients.base import probe

SERVICE = "letta"


class LettaClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, token: str | None) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def health(self) -> dict[str, Any]:
        return await probe(self._http, f"{self.base_url}/v1/health/", SERVICE)
