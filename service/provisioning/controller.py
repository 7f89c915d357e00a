"""``POST /webhooks/auth``: the signup/deletion webhook from the ``auth.users`` triggers.

Reaches us through the Edge Function relay (Standard Webhooks signature) or straight from pg_net (shared
secret header). Verified before the body is parsed, answered 202 at once; the work runs in the
background and is idempotent, so at-least-once delivery and storms are harmless.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException

from service.provisioning.service import Provisioner
from service.provisioning.webhook_auth import WebhookAuthError, verify_shared_secret, verify_standard_webhook
from service.settings import Settings
from service.web.examples import USER_ID
from service.web.openapi import ok, problem
from service.web.problems import ProblemError

MAX_WEBHOOK_BYTES = 64 * 1024


class UserRecord(msgspec.Struct):
    id: uuid.UUID


class AuthUsersWebhook(msgspec.Struct):
    """The Database Webhook payload shape (trimmed by our trigger: no password hash, no tokens)."""

    type: Literal["INSERT", "UPDATE", "DELETE"]
    table: Literal["users"]
    schema: Literal["auth"]
    record: UserRecord | None = None
    old_record: UserRecord | None = None


class WebhookAccepted(msgspec.Struct):
    accepted: bool
    type: str
    user_id: str


def authenticate_webhook(settings: Settings, headers: Any, body: bytes) -> None:
    """A Standard Webhooks signature when ``STANDARD_WEBHOOK_SECRET`` is set and the request is signed, else the
    ``x-webhook-secret`` header. In production one mode only: with ``STANDARD_WEBHOOK_SECRET`` set, the signature
    is required and the shared secret (no timestamp, so no replay window) is refused."""
    try:
        signing_secret, shared_secret = settings.standard_webhook_secret, settings.webhook_secret
        if signing_secret and settings.is_production and "webhook-signature" not in headers:
            raise WebhookAuthError(
                "only Standard Webhooks signatures are accepted (webhook-id, webhook-timestamp, webhook-signature)"
            )
        if "webhook-signature" in headers and signing_secret:
            verify_standard_webhook(
                signing_secret.get_secret_value(), headers, body, settings.webhook_tolerance_seconds
            )
        elif shared_secret:
            verify_shared_secret(shared_secret.get_secret_value(), headers.get("x-webhook-secret"))
        else:
            raise WebhookAuthError("no webhook secret is configured on the service")
    except WebhookAuthError as exc:
        raise NotAuthorizedException(detail=str(exc)) from exc


class WebhookController(Controller):
    path = "/webhooks"
    tags = ["webhooks"]

    @post(
        "/auth",
        status_code=202,
        summary="auth.users INSERT/DELETE webhook (signed)",
        description=(
            "Sent by the signup-webhook Edge Function (Standard Webhooks headers) or by pg_net directly "
            "(x-webhook-secret). Body: the trimmed Database Webhook payload, e.g. "
            '`{"type":"INSERT","table":"users","schema":"auth","record":{"id":"<uuid>"},"old_record":null}`.'
        ),
        security=[{}],
        request_max_body_size=MAX_WEBHOOK_BYTES,
        responses={
            202: ok(WebhookAccepted, "Accepted", {"accepted": True, "type": "INSERT", "user_id": USER_ID}),
            400: problem(400, "webhook payload is not an auth.users event"),
            401: problem(401, "webhook signature does not verify"),
            413: problem(413, f"webhook body is over {MAX_WEBHOOK_BYTES} bytes"),
        },
    )
    async def auth_users(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        provisioner: NamedDependency[Provisioner],
    ) -> Response[WebhookAccepted]:
        body = await request.body()  # Litestar enforces request_max_body_size (413) while reading
        authenticate_webhook(settings, request.headers, body)
        try:
            event = msgspec.json.decode(body, type=AuthUsersWebhook)
        except msgspec.ValidationError as exc:
            raise ProblemError(400, f"webhook payload is not an auth.users event: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise ProblemError(400, "webhook body is not valid JSON") from exc
        if event.type == "DELETE":
            if event.old_record is None:
                raise ProblemError(400, "a DELETE event needs old_record.id")
            user_id = event.old_record.id
            provisioner.schedule_deprovision(user_id)
        else:
            if event.record is None:
                raise ProblemError(400, f"an {event.type} event needs record.id")
            user_id = event.record.id
            provisioner.schedule(user_id)
        return Response(WebhookAccepted(accepted=True, type=event.type, user_id=str(user_id)), status_code=202)
