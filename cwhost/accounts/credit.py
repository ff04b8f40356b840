"""Accounts: their limits, their current use, and their credit.

The balance is never a counter that is decremented: it is the credit granted
less the cost of the account's workstations as the usage ledger reports it,
so the cost drawn always equals the cost the usage endpoint shows, and a crash
can neither lose nor double a charge. Setting a balance grants whatever makes
it so at that moment.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Protocol

from cwhost import inventory
from cwhost.accounts.limits import AccountLimitsBook
from cwhost.config.server import AccountLimits
from cwhost.db.database import Database
from cwhost.errors import InvalidRequest, NotFound, PaymentRequired, QuotaExceeded
from cwhost.ids import LATEST
from cwhost.model import RUNNING, Configuration
from cwhost.usage.ledger import UsageLedger
from cwhost.usage.pricing import Pricing
from drivers.base import GIB

# The largest balance an operator may set, either way: beyond it a figure is a typo.
MAX_BALANCE_USD = 1e12


@dataclass(frozen=True)
class AccountUse:
    workstations: int
    running_cpu_cores: int
    running_memory_gb: int
    running_gpus: int
    # Workstations' disks at their full size, plus what the workspaces hold, in GiB.
    storage_gb: float


@dataclass(frozen=True)
class AccountView:
    id: str
    name: str
    balance_usd: float | None
    spent_usd: float
    burn_rate_usd_per_hour: float
    exhausted_at: float | None
    limits: AccountLimits
    use: AccountUse


class StorageUse(Protocol):
    """What an account's workstations' disks and workspaces' files take (cwhost.workspaces.storage_budget)."""

    def used_bytes(self, account_id: str | None) -> int: ...


class Accounts:
    def __init__(
        self,
        db: Database,
        pricing: Pricing,
        ledger: UsageLedger,
        limits: AccountLimitsBook,
        storage: StorageUse,
        clock=time.time,
    ):
        self._db = db
        self._pricing = pricing
        self._ledger = ledger
        self._limits = limits
        self._storage = storage
        self._clock = clock

    def _row(self, account_id: str) -> dict:
        row = self._db.query_one("SELECT * FROM accounts WHERE id = ?", [account_id])
        if row is None:
            raise NotFound(f"No account {account_id!r}.")
        return row

    def use(self, account_id: str) -> AccountUse:
        """What the account uses now, storage included (which walks its workspaces' files)."""
        return replace(self._counted_use(account_id), storage_gb=self._storage.used_bytes(account_id) / GIB)

    def _counted_use(self, account_id: str) -> AccountUse:
        """What the database alone says the account uses: for the quota checks of create and
        launch, which must not walk the account's workspaces to count cores."""
        held = inventory.running_use(self._db, account_id)
        return AccountUse(held.workstations, held.cpu_cores, held.memory_gb, held.gpus, storage_gb=0.0)

    def spent_usd(self, account_id: str) -> float:
        pricing = self._pricing
        ids = [row["id"] for row in inventory.ever_of_account(self._db, account_id)]
        return sum(figures.cost_usd(pricing) for figures in self._ledger.sums(ids).per_workstation.values())

    def balance_usd(self, account_id: str) -> float | None:
        """Credit left, or None when the account has no credit limit."""
        return _balance(self._row(account_id)["credits_usd"], self.spent_usd(account_id))

    def burn_rate_usd_per_hour(self, account_id: str) -> float:
        """What the account's workstations cost per hour now, if the running ones were fully busy."""
        pricing = self._pricing
        rate = 0.0
        for row in inventory.live_of_account(self._db, account_id):
            rate += row["storage_gb"] * pricing.storage_gb_hour_usd
            if row["status"] == RUNNING:
                rate += row["cpu_cores"] * pricing.cpu_hour_usd
                rate += row["memory_gb"] * pricing.memory_gb_hour_usd
                if row["gpu"]:
                    rate += pricing.gpu_rate(row["gpu"])
        return rate

    def views(self) -> list[AccountView]:
        """Every account's view, by name (the operators' page)."""
        rows = self._db.query("SELECT id FROM accounts ORDER BY name")
        return [self.view(row["id"]) for row in rows]

    def view(self, account_id: str) -> AccountView:
        row = self._row(account_id)
        spent = self.spent_usd(account_id)
        balance = _balance(row["credits_usd"], spent)
        burn = self.burn_rate_usd_per_hour(account_id)
        exhausted_at = None
        if balance is not None and burn > 0:
            exhausted_at = self._clock() + max(balance, 0.0) / burn * 3600
            if exhausted_at > LATEST:
                exhausted_at = None  # not within any calendar: as good as never
        return AccountView(
            id=row["id"],
            name=row["name"],
            balance_usd=balance,
            spent_usd=spent,
            burn_rate_usd_per_hour=burn,
            exhausted_at=exhausted_at,
            limits=self._limits.of(row["id"]),
            use=self.use(account_id),
        )

    def set_balance(self, name: str, balance_usd: float) -> AccountView:
        if not (math.isfinite(balance_usd) and -MAX_BALANCE_USD <= balance_usd <= MAX_BALANCE_USD):
            raise InvalidRequest(
                f"A balance must be a finite number of USD between {-MAX_BALANCE_USD:g} and {MAX_BALANCE_USD:g}.",
                details={"balance_usd": [f"Must be finite and between {-MAX_BALANCE_USD:g} and {MAX_BALANCE_USD:g}."]},
            )
        row = self._db.query_one("SELECT id FROM accounts WHERE name = ?", [name])
        if row is None:
            raise NotFound(f"No account named {name!r}.")
        with self._db.write() as tx:
            tx.table("accounts").update(row["id"], {"credits_usd": balance_usd + self.spent_usd(row["id"])})
        return self.view(row["id"])

    def set_limits(self, name: str, changes: dict[str, int | None]) -> AccountView:
        return self.view(self._limits.set(name, changes))

    # -- checks ------------------------------------------------------------------

    def require_credit(self, account_id: str) -> None:
        balance = self.balance_usd(account_id)
        if balance is not None and balance <= 0:
            raise PaymentRequired(
                f"The account's credits are used up (balance {balance:.2f} USD).", balance_usd=balance
            )

    def require_quota_for_another_workstation(self, account_id: str, being_created: list[str]) -> None:
        """QuotaExceeded unless one more fits, besides ``being_created`` (counted once, written yet or not)."""
        limit = self._limits.of(account_id).max_workstations
        count = inventory.count_besides(self._db, account_id, being_created) + len(being_created)
        if count + 1 > limit:
            raise QuotaExceeded(
                f"The account may have at most {limit} workstations (max_workstations); it has {count}."
            )


def _balance(granted_usd: float | None, spent_usd: float) -> float | None:
    """Credit left: all that was granted less all that was spent; None for an account with no credit limit."""
    return None if granted_usd is None else granted_usd - spent_usd


def require_room_to_run(limits: AccountLimits, taken: list[Configuration], wanted: Configuration) -> None:
    """Whether an account may run ``wanted`` besides what it runs or is launching (``taken``)."""
    for name, limit, current, more in (
        ("max_running_cpu_cores", limits.max_running_cpu_cores, sum(c.cpu_cores for c in taken), wanted.cpu_cores),
        ("max_running_memory_gb", limits.max_running_memory_gb, sum(c.memory_gb for c in taken), wanted.memory_gb),
        ("max_running_gpus", limits.max_running_gpus, sum(1 for c in taken if c.gpu), 1 if wanted.gpu else 0),
    ):
        if current + more > limit:
            raise QuotaExceeded(
                f"Launching needs {more} more against the account's {name} of {limit}; {current} are in use."
            )
