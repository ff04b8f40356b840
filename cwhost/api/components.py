"""What a view reaches: the application's parts, typed, from one place.

cwhost.app builds them once per application and stores them on it; a view
asks ``services()`` (the domain) or ``components()`` (besides the domain: the
configuration, the request admission, the tokens of the side doors).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flask import Flask, current_app

from cwhost.accounts.tokens import TokenVerifier
from cwhost.api.ratelimit import RateLimiter
from cwhost.config.server import Config
from cwhost.db.database import Database
from cwhost.remote.door_tokens import DoorTokens
from cwhost.remote.live_views import LiveViews
from cwhost.workstations.services import Services
from drivers.base import HypervisorDriver

_EXTENSION = "cwhost"


@dataclass(frozen=True)
class Components:
    config: Config
    db: Database
    driver: HypervisorDriver
    services: Services
    # Admission of API requests; see server.max_in_flight.
    in_flight: threading.BoundedSemaphore
    rate_limiter: RateLimiter
    tokens: TokenVerifier
    # The browser console's links and WebSocket tokens; None when [console] port is 0.
    console: DoorTokens | None
    # The live views the console's bridge carries (none are made while it is off).
    live_views: LiveViews
    # The tokens of access.browser.cdpUrl; None when [browser] port is 0.
    browser: DoorTokens | None

    def install(self, app: Flask) -> None:
        app.extensions[_EXTENSION] = self


def components(app: Flask | None = None) -> Components:
    """The parts of ``app`` (by default the one serving this request)."""
    found = (app or current_app).extensions[_EXTENSION]
    assert isinstance(found, Components)
    return found


def services() -> Services:
    return components().services
