"""cwhost's own stops: workstations of accounts out of credit, and those past a running or idle timeout."""

from __future__ import annotations

import logging
import time

from cwhost.accounts.credit import Accounts
from cwhost.accounts.tokens import Principal
from cwhost.config.server import Config
from cwhost.errors import InvalidState, NotFound
from cwhost.ids import rfc3339_to_unix
from cwhost.model import Workstation
from cwhost.usage.ledger import UsageLedger
from cwhost.workstations.background import BackgroundWork
from cwhost.workstations.lifecycle import Lifecycle
from cwhost.workstations.store import WorkstationStore

log = logging.getLogger(__name__)

# Who acts when cwhost itself stops a workstation.
SYSTEM = Principal(account_id="", key_id="cwhost", admin=True)


class Enforcer:
    def __init__(
        self,
        store: WorkstationStore,
        accounts: Accounts,
        ledger: UsageLedger,
        lifecycle: Lifecycle,
        background: BackgroundWork,
        config: Config,
        clock=time.time,
    ):
        self._background = background
        self._store = store
        self._accounts = accounts
        self._ledger = ledger
        self._lifecycle = lifecycle
        self._config = config
        self._clock = clock

    def enforce(self) -> None:
        """Stop what must stop. Each stop is graceful and runs in the background, so that one
        slow guest does not hold up the others; a workstation already stopping is left to it."""
        reasons = self._out_of_credit()
        now = self._clock()
        for ws in self._store.running():
            if ws.id not in reasons and ws.started_at:
                reason = self._timeout_passed(ws, now)
                if reason:
                    reasons[ws.id] = reason
        self._stop_each(reasons)

    def stop_the_out_of_credit(self) -> None:
        """The credit check alone, run after every sampler tick: it sees new usage as soon as it is
        recorded, so at a 1 s interval a workstation stops within about a second of running out."""
        self._stop_each(self._out_of_credit())

    def _stop_each(self, reasons: dict[str, str]) -> None:
        for workstation_id, reason in reasons.items():
            self._background.submit(self._stop_because, workstation_id, reason)

    def _out_of_credit(self) -> dict[str, str]:
        """Running workstations of accounts with a credit limit and nothing left, when that means a stop."""
        if self._config.credits_when_exhausted != "stop":
            return {}
        running: dict[str, list[str]] = {}
        for ws in self._store.running():
            running.setdefault(ws.account_id, []).append(ws.id)
        out: dict[str, str] = {}
        for account_id, ids in running.items():
            balance = self._accounts.balance_usd(account_id)
            if balance is not None and balance <= 0:
                out.update(dict.fromkeys(ids, "its account's credits are used up"))
        return out

    def _timeout_passed(self, ws: Workstation, now: float) -> str | None:
        running_for = now - rfc3339_to_unix(ws.started_at or "")
        if ws.running_timeout_minutes and running_for >= ws.running_timeout_minutes * 60:
            return f"it ran for its runningTimeoutMinutes ({ws.running_timeout_minutes})"
        if ws.idle_timeout_minutes and self._idle(ws, ws.idle_timeout_minutes * 60, now):
            return f"it was idle for its idleTimeoutMinutes ({ws.idle_timeout_minutes})"
        return None

    def _idle(self, ws: Workstation, seconds: float, now: float) -> bool:
        """Every reading of the last ``seconds`` below the idle share of the workstation's cores."""
        busiest = self._ledger.busiest_over(ws.id, now - seconds)
        return busiest is not None and busiest < self._config.sampler.idle_cpu_share * ws.configuration.cpu_cores

    def _stop_because(self, workstation_id: str, reason: str) -> None:
        log.warning("stopping workstation %s: %s", workstation_id, reason)
        try:
            self._lifecycle.stop(SYSTEM, workstation_id, reason=reason)
        except (InvalidState, NotFound):
            pass  # it stopped, or went, meanwhile
        except Exception:
            log.exception("could not stop %s (%s); the next round tries again", workstation_id, reason)
