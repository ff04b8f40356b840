"""``cwhost serve``: the process that serves the API, its side listeners and its background loops.

It recovers the database against the hypervisor once, then runs the sampler
and the reconciler on threads of their own until SIGTERM or ^C, and on the
way out stops the listeners, joins the loops and waits for background work.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import socketserver
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from cwhost.accounts import tokens
from cwhost.api.components import Components
from cwhost.api.components import components as components_of
from cwhost.api.preflight import make_preflight
from cwhost.app import create_app
from cwhost.cli.data_dir import open_database
from cwhost.cli.http_server import make_server
from cwhost.cli.serverlock import AlreadyServing, hold_data_dir
from cwhost.config.server import Config, ConfigError, SideListenerConfig
from cwhost.db.database import Database
from cwhost.remote.cdp import CdpProxy
from cwhost.remote.console import console_bridge
from cwhost.remote.door_tokens import DoorTokens
from cwhost.remote.listener_guard import ConnectionCaps
from cwhost.workstations.services import Services
from drivers.base import HypervisorUnavailable

log = logging.getLogger("cwhost")

# glibc's mallopt parameter for the most arenas malloc may create.
_M_ARENA_MAX = -8


def _limit_malloc_arenas() -> None:
    """Cap glibc's malloc at two arenas, before any thread starts.

    glibc lets threads have up to eight arenas per core, each growing and
    fragmenting on its own: with dozens of server threads the service's
    memory crept up for minutes under steady load (the long soak: 105 to 113
    MiB over 4 minutes after warm-up; with two arenas 103 to 106 MiB, flat for
    the last 3). Python threads seldom allocate at the same instant anyway,
    holding the GIL. Another C library has no such arenas: nothing to do.
    """
    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass


def _with_overrides(config, args):
    overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value}
    return replace(config, server=replace(config.server, **overrides)) if overrides else config


def _listen(app, config):
    """The HTTP server, listening; OSError if the address cannot be had."""
    server = config.server
    return make_server(
        app,
        preflight=make_preflight(app),
        max_connections_per_peer=server.max_connections_per_peer,
        connection_limit=server.connection_limit,
        host=server.host,
        port=server.port,
        # Waits and streams have threads of their own, beyond those of the request slots.
        threads=server.threads + config.readiness.max_waits + config.streams.max_open,
        channel_timeout=server.idle_connection_seconds,
        # Above cwhost's own limits, so that cwhost answers an oversized
        # body with its JSON 413; a body declared beyond them is refused
        # from its headers alone (see cwhost.api.preflight).
        max_request_body_size=2
        * max(server.max_body_bytes, config.workspaces.max_upload_bytes, config.guest_files.max_write_bytes),
        ident="cwhost",
    )


def _start_background(services: Services, config: Config) -> tuple[threading.Event, list[threading.Thread]]:
    """The sampler, with the credit check after each tick; the readiness rounds; and the reconciler,
    with the timeouts after each pass; after recovery has reconciled the database once."""
    services.recordings.recover()
    try:
        services.reconciler.recover()
    except HypervisorUnavailable as exc:
        log.error("hypervisor unavailable at start-up; state not reconciled: %s", exc)
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=services.sampler.run,
            args=(stop, services.enforcer.stop_the_out_of_credit),
            name="sampler",
            daemon=True,
        ),
        threading.Thread(target=services.readiness.run, args=(stop,), name="readiness", daemon=True),
        threading.Thread(
            target=services.reconciler.run,
            args=(stop, config.driver.reconcile_interval_seconds, services.enforcer.enforce),
            name="reconciler",
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    return stop, threads


def serve(config, args) -> int:
    _limit_malloc_arenas()
    config = _with_overrides(config, args)
    try:
        lock = hold_data_dir(config.data_dir)
    except AlreadyServing as exc:
        print(f"cwhost: {exc}", file=sys.stderr)
        return 1
    with lock:
        db = open_database(config)
        if not tokens.has_any_key(db):
            _bootstrap_admin_key(db)
        app = create_app(config)
        try:
            server = _listen(app, config)
        except OSError as exc:
            print(
                f"cwhost: cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}", file=sys.stderr
            )
            return 1
        components = components_of(app)
        listeners = _side_listeners(components, config)
        stop, threads = _start_background(components.services, config)
        signal.signal(signal.SIGTERM, _interrupt)
        log.info(
            "cwhost serving on http://%s:%d (driver %s, data in %s)",
            config.server.host,
            config.server.port,
            config.driver.name,
            config.data_dir,
        )
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            for listener in listeners:
                listener.shutdown()
                listener.server_close()
            for thread in threads:
                thread.join(timeout=30)
            components.services.background.wait_idle()
            log.info("cwhost stopped")
    return 0


def _side_listeners(components: Components, config: Config) -> list[socketserver.BaseServer]:
    """The console's WebSocket bridge and the CDP proxy, each serving on a thread when configured."""
    wanted: list[tuple[str, DoorTokens | None, Callable[..., socketserver.BaseServer], SideListenerConfig]] = [
        (
            "the console",
            components.console,
            partial(console_bridge, live_views=components.live_views, terminals=components.services.terminals),
            config.console,
        ),
        ("CDP", components.browser, CdpProxy, config.browser),
    ]
    listeners: list[socketserver.BaseServer] = []
    for what, door_tokens, make, settings in wanted:
        if door_tokens is None:
            continue
        try:
            caps = ConnectionCaps(settings.max_connections, settings.max_connections_per_peer)
            listener = make(door_tokens, settings.listen, settings.port, caps)
        except OSError as exc:
            for started in listeners:
                started.shutdown()
                started.server_close()
            raise ConfigError(
                f"cannot listen for {what} on {settings.listen}:{settings.port}: {exc.strerror}"
            ) from None
        threading.Thread(target=listener.serve_forever, name=what, daemon=True).start()
        listeners.append(listener)
    return listeners


def _interrupt(signum, frame):
    """systemd stops services with SIGTERM; leave through the same clean path as ^C."""
    raise KeyboardInterrupt


def _bootstrap_admin_key(db: Database) -> None:
    """Give a newcomer at a terminal a token to start with.

    The token is printed only to an interactive terminal: under systemd,
    standard output goes to the journal, and a token must never be logged.
    """
    if not sys.stdout.isatty():
        log.warning("no API tokens exist; create one with: cwhost keys create --account admin --admin")
        return
    key = tokens.create_key(db, "admin", admin=True)
    print("No API tokens existed, so an admin token was created. It is shown only once:")
    print(f"  export CWHOST_TOKEN={key.token}", flush=True)
