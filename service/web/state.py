"""Where middleware and guards, which get no dependency injection, find the services the app was wired with."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from litestar.datastructures import State

if TYPE_CHECKING:  # the wiring imports every service, and some of those import this module
    from service.wiring import Services


def services_of(state: State) -> Services:
    return cast("Services", state.services)
