"""ASGI pieces the tests put in front of an app under test."""

from __future__ import annotations

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send


class PeerFromHeader(ASGIMiddleware):
    """Sets the connection's peer address to the request's ``X-Test-Peer`` (the test client's is "testclient")."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        peer = dict(scope["headers"]).get(b"x-test-peer")
        if peer:
            scope["client"] = (peer.decode(), 50000)
        await next_app(scope, receive, send)
