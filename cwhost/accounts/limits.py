"""Each account's limits: the configuration's defaults and its overrides for the account, then
whatever an operator has set for the account at run time (kept in the database, so it survives a
restart and needs no edit of the configuration file)."""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from dataclasses import replace

from cwhost.config.server import AccountLimits, LimitsConfig
from cwhost.db.database import Database
from cwhost.errors import InvalidRequest, NotFound

LIMIT_NAMES = tuple(spec.name for spec in dataclass_fields(AccountLimits))
# Beyond this a limit is a typo, and SQLite's integers and the API's JSON numbers stay exact.
MAX_LIMIT = 1_000_000


class AccountLimitsBook:
    def __init__(self, db: Database, limits: LimitsConfig):
        self._db = db
        self._limits = limits

    def of(self, account_id: str) -> AccountLimits:
        row = self._db.query_one("SELECT name FROM accounts WHERE id = ?", [account_id])
        if row is None:
            raise NotFound(f"No account {account_id!r}.")
        configured = self._limits.for_account(row["name"])
        rows = self._db.query("SELECT name, value FROM account_limits WHERE account_id = ?", [account_id])
        return replace(configured, **{row["name"]: row["value"] for row in rows if row["name"] in LIMIT_NAMES})

    def set(self, account_name: str, changes: dict[str, int | None]) -> str:
        """Set the named limits of an account, all or none; None gives one back to the configuration.
        Workstations already over a lowered limit keep running: the limit refuses what comes next."""
        for name, value in changes.items():
            if name not in LIMIT_NAMES:
                raise InvalidRequest(f"No limit named {name!r}.", details={name: ["Unknown limit."]})
            if value is not None and not (isinstance(value, int) and 0 <= value <= MAX_LIMIT):
                raise InvalidRequest(
                    f"A limit is a whole number from 0 to {MAX_LIMIT}.",
                    details={name: [f"Must be a whole number from 0 to {MAX_LIMIT}."]},
                )
        row = self._db.query_one("SELECT id FROM accounts WHERE name = ?", [account_name])
        if row is None:
            raise NotFound(f"No account named {account_name!r}.")
        with self._db.write() as tx:
            for name, value in changes.items():
                tx.execute("DELETE FROM account_limits WHERE account_id = ? AND name = ?", [row["id"], name])
                if value is not None:
                    tx.table("account_limits").insert({"account_id": row["id"], "name": name, "value": value})
        return row["id"]
