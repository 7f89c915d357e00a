"""What the auth pass-through takes and answers with: bounded inputs, and Supabase Auth's session as sent."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

MAX_EMAIL_CHARS = 320  # RFC 5321: 64 local + @ + 255 domain
MAX_PASSWORD_BYTES = 72  # bcrypt ignores the rest; GoTrue rejects longer passwords
MAX_REFRESH_TOKEN_CHARS = 2048
# hCaptcha and Turnstile tokens are a few hundred to ~2000 characters.
MAX_CAPTCHA_TOKEN_CHARS = 4096
MAX_METADATA_KEYS = 32
# user_metadata is copied into every access token GoTrue issues: keep it small.
MAX_METADATA_BYTES = 4096


Email = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=MAX_EMAIL_CHARS,
        description="The user's email address; Supabase Auth validates it.",
        examples=["ada@example.com"],
    ),
]
Password = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_PASSWORD_BYTES,
        description=f"At most {MAX_PASSWORD_BYTES} bytes as UTF-8. Strength rules are the Supabase project's.",
        examples=["correct horse battery staple"],
    ),
]
RefreshToken = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_REFRESH_TOKEN_CHARS,
        description="The refresh_token of a session returned by login, register or refresh.",
        examples=["v2ns4xb6jzqa"],
    ),
]
CaptchaToken = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_CAPTCHA_TOKEN_CHARS,
        description=(
            "The token your captcha widget (hCaptcha or Cloudflare Turnstile) returned, when the Supabase project "
            "has captcha protection on; passed to Supabase Auth, which verifies it."
        ),
        examples=["10000000-aaaa-bbbb-cccc-000000000001"],
    ),
]
UserMetadata = Annotated[
    dict[str, Any],
    Meta(
        max_length=MAX_METADATA_KEYS,
        description=(
            f"User metadata stored as user_metadata (at most {MAX_METADATA_KEYS} keys and "
            f"{MAX_METADATA_BYTES} bytes as JSON); it ends up in every access token."
        ),
        examples=[{"full_name": "Ada Lovelace"}],
    ),
]


def _check_password_bytes(password: str) -> None:
    # msgspec's max_length counts characters; bcrypt's limit is in bytes.
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise ValueError(f"password must be at most {MAX_PASSWORD_BYTES} bytes as UTF-8")


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    email: Email
    password: Password
    data: UserMetadata | None = None
    captcha_token: CaptchaToken | None = None

    def __post_init__(self) -> None:
        _check_password_bytes(self.password)
        if self.data and len(msgspec.json.encode(self.data)) > MAX_METADATA_BYTES:
            raise ValueError(f"data must be at most {MAX_METADATA_BYTES} bytes as JSON")


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    email: Email
    password: Password
    captcha_token: CaptchaToken | None = None

    def __post_init__(self) -> None:
        _check_password_bytes(self.password)


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    refresh_token: RefreshToken


class AuthSession(msgspec.Struct, kw_only=True, omit_defaults=True):
    """GoTrue's token response (``AccessTokenResponse``), field for field."""

    access_token: str
    token_type: str
    expires_in: int
    expires_at: int | None = None
    refresh_token: str
    user: dict[str, Any]
    provider_token: str | None = None
    provider_refresh_token: str | None = None
    weak_password: dict[str, Any] | None = None


class RegisterResponse(msgspec.Struct):
    user: dict[str, Any]
    session: AuthSession | None
