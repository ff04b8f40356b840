"""The ``cwhost`` command: ``serve`` and ``keys``."""

from __future__ import annotations

import argparse
import ctypes
import logging
import signal
import sys
import threading
from dataclasses import replace

from cwhost import auth
from cwhost.accounts import Accounts
from cwhost.app import create_app, make_sampler
from cwhost.config import ConfigError, load_config
from cwhost.db import Database
from cwhost.http_server import serve
from cwhost.errors import NotFound
from cwhost.usage import UsageLedger
from drivers.base import HypervisorUnavailable

log = logging.getLogger("cwhost")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cwhost", description=__doc__)
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
    create.add_argument("--account", required=True, help="account name (created if new)")
    create.add_argument("--admin", action="store_true", help="the token may see every account")
    key_commands.add_parser("list", help="list tokens (never their secret)")
    revoke = key_commands.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("key_id")

    types = commands.add_parser("types", help="workstation types")
    types.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    type_commands = types.add_subparsers(dest="types_command", required=True)
    type_commands.add_parser("check", help="check that every type's boot files exist")

    accounts = commands.add_parser("accounts", help="manage accounts' credit")
    accounts.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    account_commands = accounts.add_subparsers(dest="accounts_command", required=True)
    account_commands.add_parser("list", help="accounts with their balance, spending and use")
    set_credits = account_commands.add_parser("set-credits", help="set an account's balance in USD")
    set_credits.add_argument("name")
    set_credits.add_argument("amount", type=float)
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _open_database(config) -> Database:
    db = Database(config.database_path)
    db.migrate()
    return db


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


def _serve(config, args) -> int:
    _limit_malloc_arenas()
    overrides = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    if overrides:
        config = replace(config, server=replace(config.server, **overrides))
    db = _open_database(config)
    if not auth.has_any_key(db):
        _bootstrap_admin_key(db)
    try:
        app = create_app(config)
    except ConfigError as exc:
        print(f"cwhost: {exc}", file=sys.stderr)
        return 2
    components = app.extensions["cwhost"]
    service = components.service
    try:
        service.recover()
    except HypervisorUnavailable as exc:
        log.error("hypervisor unavailable at start-up; state not reconciled: %s", exc)
    stop_background = threading.Event()
    sampler_thread = threading.Thread(
        target=make_sampler(components).run,
        args=(stop_background, config.data_dir / "sampler.lock", service.attach_sampler),
        name="sampler",
        daemon=True,
    )
    sampler_thread.start()
    reconciler_thread = threading.Thread(
        target=service.reconcile_periodically,
        args=(stop_background, config.driver.reconcile_interval_seconds),
        name="reconciler",
        daemon=True,
    )
    reconciler_thread.start()

    signal.signal(signal.SIGTERM, _interrupt)
    log.info(
        "cwhost serving on http://%s:%d (driver %s, data in %s)",
        config.server.host,
        config.server.port,
        config.driver.name,
        config.data_dir,
    )
    try:
        serve(
            app,
            host=config.server.host,
            port=config.server.port,
            threads=config.server.threads,
            # Above cwhost's own limits, so that cwhost answers an oversized
            # body with its JSON 413; a body declared far beyond them is
            # refused by waitress before it is spooled to disk.
            max_request_body_size=2 * max(config.server.max_body_bytes, config.workspaces.max_upload_bytes),
            ident="cwhost",
        )
    except KeyboardInterrupt:
        pass
    finally:
        stop_background.set()
        sampler_thread.join(timeout=30)
        reconciler_thread.join(timeout=30)
        service.wait_idle()
        log.info("cwhost stopped")
    return 0


def _interrupt(signum, frame):
    """systemd stops services with SIGTERM; leave through the same clean path as ^C."""
    raise KeyboardInterrupt


def _bootstrap_admin_key(db: Database) -> None:
    """Give a newcomer at a terminal a token to start with.

    The token is printed only to an interactive terminal: under systemd,
    standard output goes to the journal, and a token must never be logged.
    """
    if not sys.stdout.isatty():
        log.warning(
            "no API tokens exist; create one with: cwhost keys create --account admin --admin"
        )
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(getattr(args, "sub_config", None) or args.config)
    except ConfigError as exc:
        print(f"cwhost: {exc}", file=sys.stderr)
        return 2
    _configure_logging(config.log_level)
    if args.command == "serve":
        return _serve(config, args)
    if args.command == "accounts":
        return _accounts(config, args)
    if args.command == "types":
        return _check_types(config)
    return _keys(config, args)


def _check_types(config) -> int:
    """Exit 1 if any type names a file that is not there, listing each such file."""
    broken = 0
    for wtype in config.types:
        missing = wtype.missing_files()
        if missing:
            broken += 1
            print(f"{wtype.id}: missing {', '.join(missing)}")
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

