"""``python -m service``: run the API with uvicorn on HOST:PORT, with the server limits of ``service.web.server``."""

from __future__ import annotations

import sys

from service.settings import SettingsError, get_settings
from service.web.server import run


def main() -> None:
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    run(settings)


if __name__ == "__main__":
    main()
