"""The live workstations' rows held in memory: the store's read model.

Reads of workstations (a GET, a list, the enforcer's and the console's
look-ups) are answered from here, with no SQLite statement. It is exact
because the store is the only writer of the table (one process owns the
database, cwhost.cli.serverlock): after each committed write the store reads the
rows it wrote back from SQLite and puts them here, under one lock, so a
slower writer's read-back can never put an older row over a newer one. It is
loaded whole at start-up. If a read-back fails, the whole model is marked
stale and the next read reloads it from SQLite, or fails as SQLite would.

Deleted workstations are not kept; their rare reads (usage) go to SQLite.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable

from cwhost.model import Workstation


class Records:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stale = True
        self._rowid_of: dict[str, int] = {}
        self._at: dict[int, Workstation] = {}
        # Rowids in creation order, of everyone's and of each account's.
        self._order: list[int] = []
        self._order_of: dict[str, list[int]] = {}

    def replace_all(self, rows: Iterable[tuple[int, Workstation]]) -> None:
        """Everything anew (start-up, or after a failed read-back); the caller holds ``lock``."""
        self._rowid_of, self._at, self._order, self._order_of = {}, {}, [], {}
        for rowid, ws in rows:
            self.put(rowid, ws)
        self.stale = False

    def put(self, rowid: int, ws: Workstation) -> None:
        """A row as committed; the caller holds ``lock``."""
        if ws.id not in self._rowid_of:
            bisect.insort(self._order, rowid)
            bisect.insort(self._order_of.setdefault(ws.account_id, []), rowid)
            self._rowid_of[ws.id] = rowid
        self._at[rowid] = ws

    def drop(self, workstation_id: str) -> None:
        """A row deleted, or gone; the caller holds ``lock``."""
        rowid = self._rowid_of.pop(workstation_id, None)
        if rowid is None:
            return
        ws = self._at.pop(rowid)
        for order in (self._order, self._order_of[ws.account_id]):
            del order[bisect.bisect_left(order, rowid)]

    def get(self, workstation_id: str) -> Workstation | None:
        rowid = self._rowid_of.get(workstation_id)
        return self._at[rowid] if rowid is not None else None

    def all(self) -> list[Workstation]:
        return list(self._at.values())

    def page(
        self, account_id: str | None, after: int, limit: int, wanted: Callable[[Workstation], bool] | None
    ) -> list[tuple[int, Workstation]]:
        """Up to ``limit`` rows after rowid ``after`` in creation order, of one account (None: all)."""
        order = self._order if account_id is None else self._order_of.get(account_id, [])
        start = bisect.bisect_right(order, after)
        at = self._at
        if wanted is None:
            return [(rowid, at[rowid]) for rowid in order[start : start + limit]]
        found: list[tuple[int, Workstation]] = []
        for rowid in order[start:]:
            if wanted(at[rowid]):
                found.append((rowid, at[rowid]))
                if len(found) == limit:
                    break
        return found
