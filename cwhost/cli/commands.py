"""The ``cwhost`` command: serve the API, and manage tokens, accounts and types."""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from importlib.metadata import version

from cwhost.accounts import tokens
from cwhost.accounts.credit import MAX_BALANCE_USD
from cwhost.app import build_services, make_driver
from cwhost.cli import images as images_command
from cwhost.cli.data_dir import act_as_data_owner, open_database, prepare_data_dir
from cwhost.cli.serve import serve
from cwhost.config.server import ConfigError, load_config
from cwhost.errors import NotFound
from cwhost.images.catalog import ImageCatalog
from cwhost.patterns import ACCOUNT_NAME_PATTERN

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


def _keys(config, args) -> int:
    db = open_database(config)
    if args.keys_command == "create":
        key = tokens.create_key(db, args.account, admin=args.admin)
        print(f"created key {key.key_id} for account {args.account}; the token is shown once:")
        print(key.token)
    elif args.keys_command == "list":
        print(f"{'ID':<14} {'ACCOUNT':<24} {'ADMIN':<6} {'CREATED':<21} REVOKED")
        for row in tokens.list_keys(db):
            print(
                f"{row['id']:<14} {row['account']:<24} {'yes' if row['admin'] else 'no':<6}"
                f" {row['created_at']:<21} {row['revoked_at'] or '-'}"
            )
    elif args.keys_command == "revoke":
        if not tokens.revoke_key(db, args.key_id):
            print(f"cwhost: no active key {args.key_id}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(getattr(args, "sub_config", None) or args.config)
        _configure_logging(config.log_level)
        if args.command == "types":
            return _check_types(config)
        if args.command == "images":
            return images_command.run(config, args)
        prepare_data_dir(config)
        act_as_data_owner(config)
        command = {"serve": serve, "accounts": _accounts, "keys": _keys}[args.command]
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
    db = open_database(config)
    accounts = build_services(db, make_driver(config), config).accounts
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
