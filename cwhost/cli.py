"""The ``cwhost`` command: serve the API, and manage tokens, accounts and types."""

from __future__ import annotations

import argparse
import ctypes
import logging
import math
import os
import pwd
import re
import signal
import socketserver
import sys
import threading
from dataclasses import replace
from importlib.metadata import version

from cwhost import auth
from cwhost.accounts import MAX_BALANCE_USD, Accounts
from cwhost.api.preflight import make_preflight
from cwhost.app import create_app, make_sampler
from cwhost.cdp import CdpProxy
from cwhost.config import ConfigError, load_config
from cwhost.console import console_bridge
from cwhost.db import Database
from cwhost.errors import NotFound
from cwhost.http_server import make_server
from cwhost.images import command as images_command
from cwhost.images.catalog import ImageCatalog
from cwhost.listener_guard import ConnectionCaps
from cwhost.patterns import ACCOUNT_NAME_PATTERN
from cwhost.serverlock import AlreadyServing, hold_data_dir
from cwhost.usage import UsageLedger
from drivers.base import HypervisorUnavailable

log = logging.getLogger("cwhost")


_DESCRIPTION = (
    "cwhost: private cloud workstations on one GPU server."
    " Serve the API, and manage tokens, accounts and workstation types."
)


def _account_name(text: str) -> str:
    if not re.fullmatch(ACCOUNT_NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"invalid account name {text!r}: 1 to 63 of A-Z, a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
        )
    return text


def _usd(text: str) -> float:
    try:
        amount = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of USD: {text!r}") from None
    if not (math.isfinite(amount) and abs(amount) <= MAX_BALANCE_USD):
        raise argparse.ArgumentTypeError(
            f"a balance must be a finite number of USD between {-MAX_BALANCE_USD:g} and {MAX_BALANCE_USD:g}, not {text}"
        )
    return amount


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cwhost", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"cwhost {version('cwhost')}")
    parser.add_argument("--config", help="TOML configuration file (default: $CWHOST_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API server")
    serve.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")

    keys = commands.add_parser("keys", help="manage API tokens")
    keys.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a token and print it once")
    create.add_argument("--account", required=True, type=_account_name, help="account name (created if new)")
    create.add_argument("--admin", action="store_true", help="the token may see every account")
    key_commands.add_parser("list", help="list tokens (never their secret)")
    revoke = key_commands.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("key_id")

    types = commands.add_parser("types", help="workstation types")
    types.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    type_commands = types.add_subparsers(dest="types_command", required=True)
    type_commands.add_parser("check", help="check that every type's boot files exist")

    images_command.add_parser(commands)

    accounts = commands.add_parser("accounts", help="manage accounts' credit")
    accounts.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    account_commands = accounts.add_subparsers(dest="accounts_command", required=True)
    account_commands.add_parser("list", help="accounts with their balance, spending and use")
    set_credits = account_commands.add_parser("set-credits", help="set an account's balance in USD")
    set_credits.add_argument("name", type=_account_name)
    set_credits.add_argument("amount", type=_usd)
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _open_database(config) -> Database:
    """The configured database, migrated; the command says which one, so nobody edits the wrong one."""
    print(f"cwhost: database {config.database_path}", file=sys.stderr)
    db = Database(config.database_path)
    db.migrate()
    return db


def _prepare_data_dir(config) -> None:
    """Create the data directory, or stop with one line saying why it cannot be used."""
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"data directory {config.data_dir} cannot be created: {exc.strerror}") from None
    if not config.data_dir.is_dir():
        raise ConfigError(f"data directory {config.data_dir} is not a directory")
    if not os.access(config.data_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"data directory {config.data_dir} is not writable by this user")


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
        threads=server.threads,
        channel_timeout=server.idle_connection_seconds,
        # Above cwhost's own limits, so that cwhost answers an oversized
        # body with its JSON 413; a body declared beyond them is refused
        # from its headers alone (see cwhost.api.preflight).
        max_request_body_size=2 * max(server.max_body_bytes, config.workspaces.max_upload_bytes),
        ident="cwhost",
    )


def _start_background(components, config) -> tuple[threading.Event, list[threading.Thread]]:
    """The sampler and the reconciler, after recovery has reconciled the database once."""
    services = components.services
    try:
        services.reconciler.recover()
    except HypervisorUnavailable as exc:
        log.error("hypervisor unavailable at start-up; state not reconciled: %s", exc)
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=make_sampler(components).run,
            args=(stop, services.lifecycle.attach_sampler),
            name="sampler",
            daemon=True,
        ),
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


def _serve(config, args) -> int:
    _limit_malloc_arenas()
    config = _with_overrides(config, args)
    try:
        lock = hold_data_dir(config.data_dir)
    except AlreadyServing as exc:
        print(f"cwhost: {exc}", file=sys.stderr)
        return 1
    with lock:
        db = _open_database(config)
        if not auth.has_any_key(db):
            _bootstrap_admin_key(db)
        app = create_app(config)
        try:
            server = _listen(app, config)
        except OSError as exc:
            print(
                f"cwhost: cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}", file=sys.stderr
            )
            return 1
        components = app.extensions["cwhost"]
        listeners = _side_listeners(components, config)
        stop, threads = _start_background(components, config)
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
            components.services.lifecycle.wait_idle()
            log.info("cwhost stopped")
    return 0


def _side_listeners(components, config) -> list[socketserver.BaseServer]:
    """The console's WebSocket bridge and the CDP proxy, each serving on a thread when configured."""
    wanted = [
        ("the console", components.console, console_bridge, config.console),
        ("CDP", components.browser, CdpProxy, config.browser),
    ]
    listeners: list[socketserver.BaseServer] = []
    for what, tokens, make, settings in wanted:
        if tokens is None:
            continue
        try:
            caps = ConnectionCaps(settings.max_connections, settings.max_connections_per_peer)
            listener = make(tokens, settings.listen, settings.port, caps)
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
    key = auth.create_key(db, "admin", admin=True)
    print("No API tokens existed, so an admin token was created. It is shown only once:")
    print(f"  export CWHOST_TOKEN={key.token}", flush=True)


def _keys(config, args) -> int:
    db = _open_database(config)
    if args.keys_command == "create":
        key = auth.create_key(db, args.account, admin=args.admin)
        print(f"created key {key.key_id} for account {args.account}; the token is shown once:")
        print(key.token)
    elif args.keys_command == "list":
        print(f"{'ID':<14} {'ACCOUNT':<24} {'ADMIN':<6} {'CREATED':<21} REVOKED")
        for row in auth.list_keys(db):
            print(
                f"{row['id']:<14} {row['account']:<24} {'yes' if row['admin'] else 'no':<6}"
                f" {row['created_at']:<21} {row['revoked_at'] or '-'}"
            )
    elif args.keys_command == "revoke":
        if not auth.revoke_key(db, args.key_id):
            print(f"cwhost: no active key {args.key_id}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}")
    return 0


def _act_as_data_owner(config) -> None:
    """As root on a data directory another user owns (the unit's ``cwhost``), become that user.

    A database file or its -wal/-shm made by root would lock the service out
    of its own database (SQLite cannot open what it cannot write).
    """
    if os.geteuid() != 0:
        return
    owner = config.data_dir.stat()
    if owner.st_uid == 0:
        return
    try:
        name = pwd.getpwuid(owner.st_uid).pw_name
        os.initgroups(name, owner.st_gid)
    except KeyError:
        name = str(owner.st_uid)
        os.setgroups([])
    os.setgid(owner.st_gid)
    os.setuid(owner.st_uid)
    print(f"cwhost: acting as {name}, who owns {config.data_dir}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(getattr(args, "sub_config", None) or args.config)
        _configure_logging(config.log_level)
        if args.command == "types":
            return _check_types(config)
        if args.command == "images":
            return images_command.run(config, args)
        _prepare_data_dir(config)
        _act_as_data_owner(config)
        command = {"serve": _serve, "accounts": _accounts, "keys": _keys}[args.command]
        return command(config, args)
    except ConfigError as exc:
        print(f"cwhost: {exc}", file=sys.stderr)
        return 2


def _check_types(config) -> int:
    """Exit 1 if any type names a file that is not there, listing each such file."""
    broken = 0
    catalog = ImageCatalog(config.images_dir)
    for wtype in config.types:
        missing = catalog.missing_files(wtype)
        if missing:
            broken += 1
            build_hint = f" (cwhost images build {wtype.id})" if wtype.boots_built_image else ""
            print(f"{wtype.id}: missing {', '.join(missing)}{build_hint}")
        else:
            print(f"{wtype.id}: ready")
    return 1 if broken else 0


def _accounts(config, args) -> int:
    db = _open_database(config)
    accounts = Accounts(db, config, UsageLedger(db, config.pricing))
    if args.accounts_command == "set-credits":
        try:
            view = accounts.set_balance(args.name, args.amount)
        except NotFound as exc:
            print(f"cwhost: {exc.message}", file=sys.stderr)
            return 1
        print(f"{view.name}: balance {view.balance_usd:.2f} USD (spent so far {view.spent_usd:.2f} USD)")
        return 0
    print(f"{'NAME':<24} {'BALANCE USD':>12} {'SPENT USD':>10} {'USD/HOUR':>9} WORKSTATIONS")
    for row in db.query("SELECT id FROM accounts ORDER BY name"):
        view = accounts.view(row["id"])
        balance = "unlimited" if view.balance_usd is None else f"{view.balance_usd:.2f}"
        print(
            f"{view.name:<24} {balance:>12} {view.spent_usd:>10.2f}"
            f" {view.burn_rate_usd_per_hour:>9.2f} {view.use.workstations}"
        )
    return 0
