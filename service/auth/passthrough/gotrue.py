"""A Supabase Auth (GoTrue) client for one pass-through request, keeping the raw body of GoTrue's answer."""

from __future__ import annotations

from typing import Any

import httpx
from supabase_auth import AsyncGoTrueClient


class RequestScopedGoTrue(AsyncGoTrueClient):
    """A GoTrue client for one request that remembers the raw body of the last response.

    Why the raw body: the library's pydantic models drop fields they do not know and re-format timestamps,
    and we promise to return what Supabase returned.
    """

    def __init__(self, url: str, anon_key: str, http: httpx.AsyncClient) -> None:
        super().__init__(
            url=url,
            headers={"apikey": anon_key},
            http_client=http,
            persist_session=False,
            auto_refresh_token=False,
        )
        self.raw_body = b""

    async def _request(self, *args: Any, **kwargs: Any) -> httpx.Response:
        response = await super()._request(*args, **kwargs)
        self.raw_body = response.content
        return response
