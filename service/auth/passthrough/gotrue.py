"""A Supabase Auth (GoTrue) client for one pass-through request, keeping the raw body of GoTrue's answer."""

from __future__ import annotations

from typing import Any

import httpx
from supabase_auth import AsyncGoTrueClient

# GoTrue's header for the end user's IP when a trusted server calls it (internal/sbff in supabase/auth): with
# GOTRUE_SECURITY_SB_FORWARDED_FOR_ENABLED (hosted: "IP address forwarding", and a secret key) its leftmost valid
# IP replaces the connection's address for the per-IP rate limits and wherever GoTrue records the client's IP.
SB_FORWARDED_FOR = "Sb-Forwarded-For"


class RequestScopedGoTrue(AsyncGoTrueClient):
    """A GoTrue client for one request that remembers the raw body of the last response.

    Why the raw body: the library's pydantic models drop fields they do not know and re-format timestamps,
    and we promise to return what Supabase returned. ``forwarded_for`` (the client's IP) goes in every request's
    ``Sb-Forwarded-For``: the client is per request, so its constructor headers are the per-request headers.
    """

    def __init__(self, url: str, api_key: str, http: httpx.AsyncClient, *, forwarded_for: str | None = None) -> None:
        headers = {"apikey": api_key}
        if forwarded_for:
            headers[SB_FORWARDED_FOR] = forwarded_for
        super().__init__(
            url=url,
            headers=headers,
            http_client=http,
            persist_session=False,
            auto_refresh_token=False,
        )
        self.raw_body = b""

    async def _request(self, *args: Any, **kwargs: Any) -> httpx.Response:
        response = await super()._request(*args, **kwargs)
        self.raw_body = response.content
        return response
