"""Archiving and deleting a workspace, which concerns the workstations that have it.

A workspace a running (or launching) workstation holds is refused: it is
checked under the allocation's lock, the lock a launch takes while it chooses
what to attach, so a workspace cannot go between a launch's check and its
start. Stopped workstations that have it lose it in the same transaction,
each with a log entry: an archived or deleted workspace is attached to nothing.
"""

from __future__ import annotations

from cwhost.accounts.tokens import Principal
from cwhost.db.database import Database
from cwhost.errors import InvalidState
from cwhost.workspaces.registry import ARCHIVED, Workspace, Workspaces
from cwhost.workstations.allocation import Allocation
from cwhost.workstations.store import WorkstationStore


class WorkspaceRetirement:
    def __init__(self, db: Database, workspaces: Workspaces, store: WorkstationStore, allocation: Allocation, clock):
        self._db = db
        self._workspaces = workspaces
        self._store = store
        self._allocation = allocation
        self._clock = clock

    def archive(self, principal: Principal, workspace_id: str) -> Workspace:
        self._retire(principal, workspace_id, delete=False)
        return self._workspaces.get(principal, workspace_id)

    def delete(self, principal: Principal, workspace_id: str) -> None:
        with self._workspaces.gate.deletion(workspace_id):
            self._retire(principal, workspace_id, delete=True)
            self._workspaces.remove_directory(workspace_id)

    def _retire(self, principal: Principal, workspace_id: str, delete: bool) -> None:
        action = "deleted" if delete else "archived"
        with self._allocation.lock:
            workspace = self._workspaces.get(principal, workspace_id)
            if not delete and workspace.status == ARCHIVED:
                return
            holder = self._allocation.workstation_holding(workspace.id)
            if holder is not None:
                raise InvalidState(
                    f"Workspace {workspace.id} is attached to running workstation {holder};"
                    f" stop it before the workspace can be {action}."
                )
            now = self._clock()
            with self._db.write() as tx:
                self._workspaces.mark_retired(tx, workspace.id, delete, now)
                detached = self._store.detach_workspace(
                    tx, workspace.id, now, f"Its workspace {workspace.id} was {action}; it no longer has one."
                )
            self._store.read_back(detached)
