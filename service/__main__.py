"""``python -m service``: run the API with uvicorn on HOST:PORT."""

from __future__ import annotations

import sys

import uvicorn

from service.settings import SettingsError, get_settings


def main() -> None:
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=True,
        ws_ping_interval=20,
        ws_ping_timeout=20,
    )


if __name__ == "__main__":
    main()
