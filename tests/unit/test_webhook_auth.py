from __future__ import annotations

import time

import pytest
from litestar.exceptions import NotAuthorizedException

from devstack.standard_webhooks import sign_standard_webhook
from service.provisioning.controller import authenticate_webhook
from service.provisioning.webhook_auth import (
    WebhookAuthError,
    verify_shared_secret,
    verify_standard_webhook,
)
from service.settings import Settings, load_settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"type":"INSERT","table":"users","schema":"auth","record":{"id":"x"},"old_record":null}'


def headers(ts: int, body: bytes = BODY, message_id: str = "msg_1", secret: str = SECRET) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_standard_webhook(secret, message_id, ts, body),
    }


def test_known_vector_from_the_standard_webhooks_spec() -> None:
    # The example in the Standard Webhooks specification (github.com/standard-webhooks/standard-webhooks).
    body = b'{"test": 2432232314}'
    signature = sign_standard_webhook(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_valid_signature_is_accepted() -> None:
    now = int(time.time())
    assert verify_standard_webhook(SECRET, headers(now), BODY, 300) == "msg_1"


def test_rotated_signature_list_is_accepted() -> None:
    now = int(time.time())
    h = headers(now)
    h["webhook-signature"] = f"v1,AAAA {h['webhook-signature']}"
    assert verify_standard_webhook(SECRET, h, BODY, 300) == "msg_1"


ARABIC_INDIC_DIGITS = "\u0661\u0667\u0666\u0664000000"  # str.isdigit() says yes; int() would parse them


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h, now: h.update({"webhook-timestamp": str(now - 600)}), "tolerance"),
        (lambda h, now: h.update({"webhook-timestamp": str(now + 600)}), "tolerance"),
        (lambda h, now: h.update({"webhook-id": "msg_other"}), "does not verify"),
        (lambda h, now: h.pop("webhook-signature"), "missing"),
        (lambda h, now: h.update({"webhook-timestamp": "soon"}), "Unix time"),
        (lambda h, now: h.update({"webhook-timestamp": "9" * 400}), "Unix time"),  # was an OverflowError
        (lambda h, now: h.update({"webhook-timestamp": f"-{now}"}), "Unix time"),
        (lambda h, now: h.update({"webhook-timestamp": ARABIC_INDIC_DIGITS}), "Unix time"),
        (lambda h, now: h.update(headers(now, secret="whsec_b3RoZXItc2VjcmV0")), "does not verify"),
    ],
)
def test_tampering_and_replay_are_rejected(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    now = int(time.time())
    h = headers(now)
    mutate(h, now)
    with pytest.raises(WebhookAuthError, match=reason):
        verify_standard_webhook(SECRET, h, BODY, 300)


def test_modified_body_is_rejected() -> None:
    now = int(time.time())
    with pytest.raises(WebhookAuthError, match="does not verify"):
        verify_standard_webhook(SECRET, headers(now), BODY.replace(b"INSERT", b"DELETE"), 300)


def test_shared_secret() -> None:
    verify_shared_secret("s" * 40, "s" * 40)
    for supplied in (None, "", "s" * 39, "t" * 40):
        with pytest.raises(WebhookAuthError):
            verify_shared_secret("s" * 40, supplied)


# --- Which way in the service accepts (service/provisioning/controller.py) ---------------------------------

SHARED = "shared-webhook-secret-0123456789abcdef"
BASE_ENV = {
    "DATABASE_URL": "postgresql://postgres:postgres@127.0.0.1:5432/postgres",
    "SUPABASE_URL": "https://project.supabase.co",
    "LETTA_BASE_URL": "http://127.0.0.1:8283",
    "LITELLM_BASE_URL": "http://127.0.0.1:4000",
    "LITELLM_MASTER_KEY": "sk-master",
}


def settings_for(environment: str, **secrets: str) -> Settings:
    return load_settings({**BASE_ENV, "ENVIRONMENT": environment, **secrets})


def shared_headers() -> dict[str, str]:
    return {"x-webhook-secret": SHARED}


@pytest.mark.parametrize("environment", ["development", "production"])
def test_a_signed_webhook_is_accepted_in_every_environment(environment: str) -> None:
    settings = settings_for(environment, WEBHOOK_SECRET=SHARED, STANDARD_WEBHOOK_SECRET=SECRET)
    authenticate_webhook(settings, headers(int(time.time())), BODY)


def test_in_production_the_standard_secret_shuts_the_shared_secret_path() -> None:
    """The shared secret has no timestamp: a captured request could be replayed for ever."""
    settings = settings_for("production", WEBHOOK_SECRET=SHARED, STANDARD_WEBHOOK_SECRET=SECRET)
    with pytest.raises(NotAuthorizedException) as refused:
        authenticate_webhook(settings, shared_headers(), BODY)
    assert "only Standard Webhooks signatures are accepted" in str(refused.value.detail)
    # A signature that fails never falls back to the shared secret either.
    stale = {**headers(int(time.time()) - 3600), **shared_headers()}
    with pytest.raises(NotAuthorizedException, match="tolerance"):
        authenticate_webhook(settings, stale, BODY)


def test_outside_production_both_ways_in_are_open() -> None:
    settings = settings_for("development", WEBHOOK_SECRET=SHARED, STANDARD_WEBHOOK_SECRET=SECRET)
    authenticate_webhook(settings, shared_headers(), BODY)
    with pytest.raises(NotAuthorizedException, match="does not match"):
        authenticate_webhook(settings, {"x-webhook-secret": "x" * 40}, BODY)


def test_in_production_the_shared_secret_alone_is_the_one_way_in() -> None:
    settings = settings_for("production", WEBHOOK_SECRET=SHARED)
    authenticate_webhook(settings, shared_headers(), BODY)
    with pytest.raises(NotAuthorizedException):
        authenticate_webhook(settings, headers(int(time.time())), BODY)  # a signature it cannot check


def test_no_secret_configured_refuses_everything() -> None:
    with pytest.raises(NotAuthorizedException, match="no webhook secret"):
        authenticate_webhook(settings_for("development"), shared_headers(), BODY)
