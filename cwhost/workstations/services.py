"""The domain's parts, side by side, as cwhost.app builds them: each view and loop takes the one it needs."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from cwhost.accounts.credit import Accounts
from cwhost.accounts.limits import AccountLimitsBook
from cwhost.accounts.ssh_keys import SshKeys
from cwhost.usage.account_report import AccountUsageReports
from cwhost.usage.ledger import UsageLedger
from cwhost.usage.metrics import SamplerMetrics
from cwhost.usage.month_to_date import MonthToDateCosts
from cwhost.usage.sampler import Sampler
from cwhost.workspaces.files import WorkspaceFiles
from cwhost.workspaces.registry import Workspaces
from cwhost.workspaces.storage_budget import StorageBudget
from cwhost.workstations.access import LiveAccess
from cwhost.workstations.account_slots import AccountSlots
from cwhost.workstations.allocation import Allocation
from cwhost.workstations.audio import Audio
from cwhost.workstations.background import BackgroundWork
from cwhost.workstations.enforcer import Enforcer
from cwhost.workstations.guards import WorkstationLocks
from cwhost.workstations.guest_actions import GuestActions
from cwhost.workstations.guest_fs import GuestFs
from cwhost.workstations.host_keys import HostKeys
from cwhost.workstations.lifecycle import Lifecycle
from cwhost.workstations.processes import Processes
from cwhost.workstations.readiness import Readiness
from cwhost.workstations.reconciler import Reconciler
from cwhost.workstations.recordings import Recordings
from cwhost.workstations.sizing import Images
from cwhost.workstations.store import WorkstationStore
from cwhost.workstations.terminals import Terminals
from cwhost.workstations.workspace_retirement import WorkspaceRetirement


@dataclass(frozen=True)
class Services:
    # The records and what is derived from them.
    store: WorkstationStore
    ledger: UsageLedger
    month_costs: MonthToDateCosts
    account_usage: AccountUsageReports
    limits: AccountLimitsBook
    accounts: Accounts
    ssh_keys: SshKeys
    workspaces: Workspaces
    storage: StorageBudget
    workspace_files: WorkspaceFiles
    # What the workstations share: the life cycle, the loops and the views alike.
    locks: WorkstationLocks
    live: LiveAccess
    images: Images
    background: BackgroundWork
    host_keys: HostKeys
    sampler: Sampler
    sampler_metrics: SamplerMetrics
    metrics_registry: CollectorRegistry
    # The workstations' verbs.
    allocation: Allocation
    retirement: WorkspaceRetirement
    lifecycle: Lifecycle
    guest_actions: GuestActions
    readiness: Readiness
    reconciler: Reconciler
    enforcer: Enforcer
    # Inside a running guest, through its guest service; streams and waits on them hold these slots.
    processes: Processes
    guest_fs: GuestFs
    terminals: Terminals
    recordings: Recordings
    audio: Audio
    streams: AccountSlots
