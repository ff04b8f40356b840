"""Each account's limits: the configuration's defaults, with the overrides it names for the account."""

from __future__ import annotations

from cwhost.config.server import AccountLimits, LimitsConfig
from cwhost.db.database import Database
from cwhost.errors import NotFound


class AccountLimitsBook:
    def __init__(self, db: Database, limits: LimitsConfig):
        self._db = db
        self._limits = limits

    def of(self, account_id: str) -> AccountLimits:
        row = self._db.query_one("SELECT name FROM accounts WHERE id = ?", [account_id])
        if row is None:
            raise NotFound(f"No account {account_id!r}.")
        return self._limits.for_account(row["name"])
