"""What the host gives out: CPU cores, memory, GPUs, workspaces and storage.

Everything here happens under one allocation lock, so two launches never count
the same free GPU, core or gigabyte, two creates never take the last place of
a quota, and a workspace cannot be deleted between a launch's check and its
start. The lock is held for decisions only, never for a write: the GPU and
ports a launch takes count as held from its reservation in memory, and are
written to the database (in one transaction, before the domain starts) after
the lock is released, so launches do not queue behind each other's writes.
A unique index makes a double assignment impossible even so.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from cwhost.accounts.credit import Accounts, require_room_to_run
from cwhost.accounts.limits import AccountLimitsBook
from cwhost.accounts.tokens import Principal
from cwhost.config.server import Config
from cwhost.errors import StorageUnavailable, Unavailable
from cwhost.hypervisor import read_host
from cwhost.model import RELEASED, RUNNING, Workstation
from cwhost.workspaces.registry import Workspace, Workspaces
from cwhost.workstations.store import WorkstationStore
from drivers.base import GpuDevice, HostInfo, HypervisorDriver, PortForward

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuSlot:
    model: str
    pci_address: str
    iommu_group: int | None
    state: str  # "free" or "assigned"
    # The workstation holding it, when the caller may know it (its own, or any for an admin).
    holder: str | None


@dataclass(frozen=True)
class HostView:
    cpu_cores: int
    memory_gb: int
    storage_gb: int
    regions: tuple[str, ...]
    cpu_cores_allocated: int
    memory_gb_allocated: int
    gpus: tuple[GpuSlot, ...]


@dataclass(frozen=True)
class Reservation:
    """What a launch took: a GPU, the workspace to share, the host port forwarded to its SSH."""

    gpu: GpuDevice | None
    workspace: Workspace | None
    ssh_port: int | None

    def forwards(self, listen: str) -> tuple[PortForward, ...]:
        """SSH on ``listen``: the one port forwarded (the browser's DevTools are reached over the guest network)."""
        return (PortForward(self.ssh_port, 22, listen),) if self.ssh_port else ()


class Allocation:
    def __init__(
        self,
        store: WorkstationStore,
        accounts: Accounts,
        limits: AccountLimitsBook,
        workspaces: Workspaces,
        driver: HypervisorDriver,
        config: Config,
    ):
        self._store = store
        self._accounts = accounts
        self._limits = limits
        self._workspaces = workspaces
        self._driver = driver
        self._config = config
        self.lock = threading.Lock()
        # What launches whose domain is still starting will use, by workstation.
        self._launching: dict[str, Workstation] = {}
        # Their GPU's address and host ports, held from the reservation on (the database may not show them yet).
        self._reserved: dict[str, tuple] = {}

    @contextmanager
    def claimed(self, ws: Workstation) -> Iterator[Reservation]:
        """What a launch needs (capacity, a GPU, its workspace, a port), held while the launch runs.

        The launch records itself before the block ends; one that raises
        instead gives back all it took, as the database has it too, like
        Nova's resource-tracker claim.
        """
        taken = self._reserve(ws)
        try:
            yield taken
        except BaseException:
            self._release(ws)
            raise
        self._launched(ws)

    def _reserve(self, ws: Workstation) -> Reservation:
        self._accounts.require_credit(ws.account_id)
        limits = self._limits.of(ws.account_id)
        host = read_host(self._driver)
        # Workstations are read from memory under the lock: a read from SQLite lets go of the GIL,
        # and under load every launch would wait for each one of them in turn.
        with self.lock:
            running = self._store.running()
            require_room_to_run(
                limits,
                [w.configuration for w in (*running, *self._launching.values()) if w.account_id == ws.account_id],
                ws.configuration,
            )
            self._require_capacity(host, running, ws)
            gpu = self._free_gpu(host, ws)
            ssh_port = self._free_port() if self._driver.forwards_ports else None
            # Read again under the lock: archiving or deleting a workspace
            # detaches it, under this same lock.
            workspace_id = self._store.current(ws.id).workspace_id
            workspace = self._workspaces.find(workspace_id) if workspace_id else None
            self._launching[ws.id] = replace(ws, workspace_id=workspace_id)
            self._reserved[ws.id] = (gpu.pci_address if gpu else None, ssh_port)
        try:
            self._store.record(ws.id, gpu_address=gpu.pci_address if gpu else None, ssh_port=ssh_port)
        except BaseException:
            self._launched(ws)
            raise
        return Reservation(gpu, workspace, ssh_port)

    def _require_capacity(self, host: HostInfo, running: list[Workstation], ws: Workstation) -> None:
        cpu = memory = 0
        for taking in (*running, *self._launching.values()):
            cpu += taking.configuration.cpu_cores
            memory += taking.configuration.memory_gb
        want = ws.configuration
        if cpu + want.cpu_cores > host.cpu_cores:
            raise Unavailable(
                f"The host has {host.cpu_cores - cpu} of {host.cpu_cores} CPU cores free;"
                f" this workstation needs {want.cpu_cores}.",
                retry_after=60,
            )
        if memory + want.memory_gb > host.memory_gb:
            raise Unavailable(
                f"The host has {host.memory_gb - memory} of {host.memory_gb} GB of memory free;"
                f" this workstation needs {want.memory_gb}.",
                retry_after=60,
            )

    def _free_gpu(self, host: HostInfo, ws: Workstation) -> GpuDevice | None:
        model = ws.configuration.gpu
        if model is None:
            return None
        held = self._store.held_gpu_addresses() | {taken[0] for taken in self._reserved.values()}
        free = [g for g in host.gpus if g.model == model and g.pci_address not in held]
        if not free:
            raise Unavailable(f"No {model} GPU is free on this host right now.", retry_after=60)
        return free[0]

    def _free_port(self) -> int:
        """A host port to forward: in the range, held by no workstation, and that nothing else listens on."""
        held = self._store.held_ports() | {taken[1] for taken in self._reserved.values()}
        listen = self._config.access.forward_listen
        for port in self._config.ssh_ports:
            if port not in held and _bindable(listen, port):
                return port
        raise Unavailable(
            f"No host port is free to forward in {self._config.access.ssh_port_first}"
            f"-{self._config.access.ssh_port_last}; a stop frees one.",
            retry_after=60,
        )

    def _launched(self, ws: Workstation) -> None:
        """The launch is recorded (or failed and released): it no longer counts as starting."""
        with self.lock:
            self._launching.pop(ws.id, None)
            self._reserved.pop(ws.id, None)

    def _release(self, ws: Workstation) -> None:
        """Give back what ``_reserve`` took for a launch that did not happen."""
        # Written before the reservation ends: until then the database still shows them held.
        try:
            self._store.record(ws.id, **RELEASED)
        except StorageUnavailable:
            # The launch's own error is the one to report; the reconciler frees
            # what a stopped workstation's row still says it holds.
            log.warning("workstation %s: what its failed launch held could not be written back yet", ws.id)
        finally:
            self._launched(ws)

    def workstation_holding(self, workspace_id: str) -> str | None:
        """The running or launching workstation a workspace is attached to; under the lock."""
        for launching in self._launching.values():
            if launching.workspace_id == workspace_id:
                return launching.id
        return self._store.running_with_workspace(workspace_id)

    def host_view(self, principal: Principal) -> HostView:
        """The host as ``principal`` may see it: another account's workstation id is not theirs to know."""
        info = read_host(self._driver)
        rows = self._store.running_or_holding_a_gpu()
        running = [w for w in rows if w.status == RUNNING]
        holders = {w.gpu_address: w for w in rows if w.gpu_address}

        def slot(gpu: GpuDevice) -> GpuSlot:
            holder = holders.get(gpu.pci_address)
            visible = holder is not None and (principal.admin or holder.account_id == principal.account_id)
            state = "assigned" if holder else "free"
            return GpuSlot(
                gpu.model, gpu.pci_address, gpu.iommu_group, state, holder.id if visible and holder else None
            )

        return HostView(
            cpu_cores=info.cpu_cores,
            memory_gb=info.memory_gb,
            storage_gb=info.storage_gb,
            regions=self._config.regions,
            cpu_cores_allocated=sum(w.configuration.cpu_cores for w in running),
            memory_gb_allocated=sum(w.configuration.memory_gb for w in running),
            gpus=tuple(slot(g) for g in info.gpus),
        )


def _bindable(address: str, port: int) -> bool:
    """Whether nothing else on the host listens on the port (QEMU would fail to start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True
