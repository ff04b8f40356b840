"""The workstation state machine: the only layer that writes workstations and calls the driver.

States: ``provisioning`` → ``stopped`` ⇄ ``running``; ``error`` when provisioning
fails or the hypervisor lost the domain. The order of effects is chosen so
that a crash at any point leaves something ``recover()`` can finish:

- create commits the row as ``provisioning`` before the driver is called;
  recovery provisions such rows again (``define`` is idempotent).
- launch commits the GPU it takes before starting the domain, so no other
  launch can take the same card; recovery frees a GPU whose domain is not
  running and marks running a domain the database thought stopped.
- delete commits ``deleted_at`` before removing the domain; recovery removes
  the domain of a deleted row that is still there.

All transitions of one workstation are serialised by a per-workstation lock,
which is enough because one process owns the database (see ``cwhost serve``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace

from cwhost.accounts import Accounts
from cwhost.auth import Principal
from cwhost.config import Config
from cwhost.db import Database, split_page
from cwhost.errors import (
    InvalidRequest,
    InvalidState,
    NotFound,
    StorageUnavailable,
    UnknownAsset,
    Unavailable,
)
from cwhost.ids import new_id, rfc3339_to_unix, unix_to_rfc3339
from cwhost.storage_budget import GIB, StorageBudget
from cwhost.usage import UsageLedger, UsageReport, close_segment, open_segment
from cwhost.workspaces import Workspace, Workspaces
from drivers.base import (
    Access,
    BootSource,
    DomainNotFound,
    DomainSpec,
    DomainState,
    DriverError,
    GpuDevice,
    HostInfo,
    HypervisorDriver,
    HypervisorUnavailable,
    InvalidDomainState,
)

log = logging.getLogger(__name__)

PROVISIONING, STOPPED, RUNNING, ERROR = "provisioning", "stopped", "running", "error"
STATUSES = (PROVISIONING, STOPPED, RUNNING, ERROR)
DOMAIN_PREFIX = "cwhost-"
PROVISION_RETRY_DELAYS = (1, 2, 4, 8, 16)
# How often a stopping guest's process is read while it shuts down.
STOP_READING_SECONDS = 0.1
# Who acts when cwhost itself stops a workstation (credits, timeouts).
SYSTEM = Principal(account_id="", key_id="cwhost", admin=True)


@dataclass(frozen=True)
class Configuration:
    cpu_cores: int
    memory_gb: int
    storage_gb: int
    gpu: str | None
    region: str


@dataclass(frozen=True)
class Workstation:
    id: str
    account_id: str
    name: str
    status: str
    type: str | None
    workspace_id: str | None
    configuration: Configuration
    created_at: str
    started_at: str | None
    status_message: str | None
    idle_timeout_minutes: int
    running_timeout_minutes: int
    gpu_address: str | None
    boot: BootSource = BootSource()

    @property
    def domain_name(self) -> str:
        return domain_name(self.id)

    def spec(self) -> DomainSpec:
        c = self.configuration
        return DomainSpec(
            name=self.domain_name,
            title=self.name,
            cpu_cores=c.cpu_cores,
            memory_gb=c.memory_gb,
            storage_gb=c.storage_gb,
            boot=self.boot,
        )


@dataclass(frozen=True)
class GpuSlot:
    device: GpuDevice
    holder: Workstation | None


@dataclass(frozen=True)
class HostView:
    info: HostInfo
    regions: tuple[str, ...]
    cpu_cores_allocated: int
    memory_gb_allocated: int
    gpus: tuple[GpuSlot, ...]


@dataclass(frozen=True)
class Page:
    items: list[Workstation]
    next_cursor: str | None


def _describe_change(old: Workstation, new: Workstation) -> str:
    changes = []
    if new.name != old.name:
        changes.append(f"name {old.name} -> {new.name}")
    for field in ("cpu_cores", "memory_gb", "storage_gb", "gpu", "region"):
        before, after = getattr(old.configuration, field), getattr(new.configuration, field)
        if before != after:
            changes.append(f"{field} {before} -> {after}")
    return "Reconfigured: " + (", ".join(changes) if changes else "nothing changed") + "."


def _log_event(tx, workstation_id: str, at: float, level: str, message: str) -> None:
    tx["workstation_events"].insert(
        {"workstation_id": workstation_id, "at": at, "level": level, "message": message}
    )


def domain_name(workstation_id: str) -> str:
    return DOMAIN_PREFIX + workstation_id


def _from_row(row: dict) -> Workstation:
    return Workstation(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        status=row["status"],
        type=row["type"],
        workspace_id=row["workspace_id"],
        configuration=Configuration(
            cpu_cores=row["cpu_cores"],
            memory_gb=row["memory_gb"],
            storage_gb=row["storage_gb"],
            gpu=row["gpu"],
            region=row["region"],
        ),
        created_at=row["created_at"],
        started_at=row["started_at"],
        status_message=row["status_message"],
        idle_timeout_minutes=row["idle_timeout_minutes"],
        running_timeout_minutes=row["running_timeout_minutes"],
        gpu_address=row["gpu_address"],
        boot=BootSource(
            image=row.get("boot_image"),
            kernel=row.get("boot_kernel"),
            initrd=row.get("boot_initrd"),
            cmdline=row.get("boot_cmdline"),
        ),
    )


class WorkstationService:
    def __init__(self, db: Database, driver: HypervisorDriver, config: Config, clock=time.time):
        self._db = db
        self._driver = driver
        self._config = config
        self._clock = clock
        self.ledger = UsageLedger(db, config.pricing, clock)
        self.accounts = Accounts(
            db, config, self.ledger, clock, storage_used_bytes=lambda account_id: self.storage.used_bytes(account_id)
        )
        # The sampler of this process, when it holds the metering lock: asked
        # for a last reading before a domain powers off.
        self._sampler = None
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()
        # Held while choosing resources for a launch, so two launches never
        # count the same free GPU, core or gigabyte.
        self._allocation_lock = threading.Lock()
        # what launches whose domain is still starting will use, by workstation
        self._launching: dict[str, Workstation] = {}
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="provision")
        self._foreign_reported: set[str] = set()
        self.workspaces = Workspaces(
            db,
            config.workspaces_dir,
            config.workspaces.max_upload_bytes,
            lock=self._allocation_lock,
            workstation_holding=self._workstation_holding,
            clock=clock,
            require_storage=lambda account_id, more_bytes: self.storage.require(account_id, more_bytes),
        )
        self.storage = StorageBudget(
            db,
            config,
            self.workspaces.bytes_used,
            host_storage_gb=lambda: self.host_info().storage_gb,
            account_limit_gb=lambda account_id: self.accounts.limits(account_id).max_storage_gb,
        )

    # -- plumbing ------------------------------------------------------------

    @contextmanager
    def _locked(self, workstation_id: str):
        with self._locks_guard:
            lock = self._locks[workstation_id]
        with lock:
            yield

    @contextmanager
    def _hypervisor(self, action: str):
        """Turn driver failures into answers a client can act on."""
        try:
            yield
        except HypervisorUnavailable as exc:
            log.warning("hypervisor unavailable during %s: %s", action, exc)
            raise Unavailable("The hypervisor is unreachable right now; try again shortly.")

    def _load(
        self, principal: Principal, workstation_id: str, include_deleted: bool = False
    ) -> Workstation:
        row = self._db.query_one(
            "SELECT * FROM workstations WHERE id = ? AND (deleted_at IS NULL OR ?)"
            " AND (account_id = ? OR ?)",
            [workstation_id, include_deleted, principal.account_id, principal.admin],
        )
        if row is None:
            raise NotFound(f"No workstation {workstation_id!r}.")
        return _from_row(row)

    def _reload(self, workstation_id: str) -> Workstation:
        return _from_row(
            self._db.query_one("SELECT * FROM workstations WHERE id = ?", [workstation_id])
        )

    def _set(self, workstation_id: str, **columns) -> None:
        with self._db.write() as tx:
            tx["workstations"].update(workstation_id, columns)

    def _transition(
        self,
        ws: Workstation,
        at: float,
        next_segment: str | None,
        event: tuple[str, str],
        configuration: Configuration | None = None,
        **columns,
    ) -> None:
        """Change a workstation, its billing segment and its log in one transaction.

        ``next_segment`` is RUNNING or STOPPED for the segment that starts now,
        or None when billing ends (failure, deletion). ``event`` is the
        (level, message) the workstation's log records.
        """
        configuration = configuration or ws.configuration
        with self._db.write() as tx:
            _log_event(tx, ws.id, self._clock(), *event)
            if columns:
                tx["workstations"].update(ws.id, columns)
            close_segment(tx, ws.id, at)
            if next_segment is not None:
                open_segment(
                    tx,
                    ws.id,
                    at,
                    running=next_segment == RUNNING,
                    storage_gb=configuration.storage_gb,
                    gpu=configuration.gpu,
                )

    def attach_sampler(self, sampler) -> None:
        self._sampler = sampler

    def _final_reading(self, ws: Workstation) -> None:
        if self._sampler is not None:
            try:
                self._sampler.sample(only={ws.id})
            except Exception:
                log.exception("final reading of %s failed; the next tick has what it missed", ws.id)

    def _shut_down_metering(self, ws: Workstation, timeout: float) -> bool:
        """Ask the guest to power off and read its process until it is gone; True if it went in time.

        The CPU a guest burns while it shuts down is billable like any other:
        reading it every STOP_READING_SECONDS loses at most that much per vCPU
        when the process exits between two readings.
        """
        deadline = time.monotonic() + timeout
        self._driver.shutdown(ws.domain_name, 0)
        while True:
            self._final_reading(ws)
            if self._driver.state(ws.domain_name) != DomainState.RUNNING:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(STOP_READING_SECONDS, left))

    def host_info(self) -> HostInfo:
        with self._hypervisor("host query"):
            return self._driver.host()

    # -- validation ----------------------------------------------------------

    def _validate(self, configuration: Configuration) -> None:
        host = self.host_info()
        limits = self._config.workstation
        errors: dict[str, list[str]] = {}
        for field, value, host_max, limit in (
            ("cpuCores", configuration.cpu_cores, host.cpu_cores, limits.max_cpu_cores),
            ("memoryGB", configuration.memory_gb, host.memory_gb, limits.max_memory_gb),
            ("storageGB", configuration.storage_gb, host.storage_gb, limits.max_storage_gb),
        ):
            ceiling = min(host_max, limit)
            if value > ceiling:
                errors[field] = [f"Must be at most {ceiling} on this server."]
        if configuration.region not in self._config.regions:
            errors["region"] = [
                "Must be one of the regions this server serves: "
                + ", ".join(self._config.regions)
                + "."
            ]
        if errors:
            raise InvalidRequest(
                "The configuration does not fit this server.", details={"configuration": errors}
            )
        if configuration.gpu is not None and configuration.gpu not in {
            g.model for g in host.gpus
        }:
            models = sorted({g.model for g in host.gpus}) or ["none"]
            raise UnknownAsset(
                f"This host has no GPU model {configuration.gpu!r}; it has: {', '.join(models)}."
            )

    # -- create / read -------------------------------------------------------

    def create(
        self,
        principal: Principal,
        name: str,
        configuration: dict | None,
        type_id: str | None = None,
        workspace_id: str | None = None,
        idle_timeout_minutes: int | None = None,
        running_timeout_minutes: int | None = None,
    ) -> Workstation:
        """Create a workstation; a type's defaults fill what the request leaves out."""
        wtype = self._usable_type(type_id) if type_id is not None else None
        if workspace_id is not None:
            self.workspaces.attachable(principal, workspace_id)
        settings = dict(configuration or {})
        if wtype is not None:
            for key, value in (
                ("cpu_cores", wtype.cpu_cores),
                ("memory_gb", wtype.memory_gb),
                ("storage_gb", wtype.storage_gb),
                ("gpu", wtype.gpu),
                ("region", wtype.region),
            ):
                settings.setdefault(key, value)
        absent = [key for key in ("cpu_cores", "memory_gb", "storage_gb") if key not in settings]
        if absent:
            camel = {"cpu_cores": "cpuCores", "memory_gb": "memoryGB", "storage_gb": "storageGB"}
            raise InvalidRequest(
                "A configuration is required unless a type gives one.",
                details={"configuration": {camel[k]: ["Missing data for required field."] for k in absent}},
            )
        config = Configuration(
            cpu_cores=settings["cpu_cores"],
            memory_gb=settings["memory_gb"],
            storage_gb=settings["storage_gb"],
            gpu=settings.get("gpu"),
            region=settings.get("region") or self._config.regions[0],
        )
        if idle_timeout_minutes is None:
            idle_timeout_minutes = wtype.idle_timeout_minutes if wtype else 0
        if running_timeout_minutes is None:
            running_timeout_minutes = wtype.running_timeout_minutes if wtype else 0
        boot = wtype.boot if wtype else BootSource()
        self._validate(config)
        self.accounts.require_credit(principal.account_id)
        now = self._clock()
        row = {
            "id": new_id("ws"),
            "account_id": principal.account_id,
            "name": name,
            "status": PROVISIONING,
            "type": type_id,
            "workspace_id": workspace_id,
            "cpu_cores": config.cpu_cores,
            "memory_gb": config.memory_gb,
            "gpu": config.gpu,
            "storage_gb": config.storage_gb,
            "region": config.region,
            "created_at": unix_to_rfc3339(now),
            "started_at": None,
            "status_message": None,
            "idle_timeout_minutes": idle_timeout_minutes,
            "running_timeout_minutes": running_timeout_minutes,
            "gpu_address": None,
            "deleted_at": None,
            "boot_image": boot.image,
            "boot_kernel": boot.kernel,
            "boot_initrd": boot.initrd,
            "boot_cmdline": boot.cmdline,
        }
        # Under the allocation lock, so that two creates cannot both take the last place.
        with self._allocation_lock:
            self.accounts.require_quota_for_another_workstation(principal.account_id)
            self.storage.require(principal.account_id, config.storage_gb * GIB)
            with self._db.write() as tx:
                tx["workstations"].insert(row)
                open_segment(tx, row["id"], now, running=False, storage_gb=config.storage_gb, gpu=None)
                _log_event(tx, row["id"], now, "info", "Created; provisioning its disk and virtual machine.")
        self._executor.submit(self._provision, row["id"])
        return _from_row(row)

    def _usable_type(self, type_id: str):
        wtype = self._config.workstation_type(type_id)
        if wtype is None:
            raise UnknownAsset(
                f"This server offers no workstation type {type_id!r}; GET /v1/workstation-types lists them."
            )
        missing = wtype.missing_files()
        if missing:
            raise UnknownAsset(
                f"Workstation type {type_id!r} cannot be used: its file {missing[0]} is missing"
                " on the server (an operator's fix: see 'cwhost types check')."
            )
        return wtype

    def _provision(self, workstation_id: str) -> None:
        with self._locked(workstation_id):
            ws = self._reload(workstation_id)
            if ws.status != PROVISIONING:
                return
            for delay in (*PROVISION_RETRY_DELAYS, None):
                try:
                    self._driver.define(ws.spec())
                except HypervisorUnavailable as exc:
                    if delay is None:
                        message = f"Provisioning failed: the hypervisor stayed unreachable ({exc})."
                        break
                    time.sleep(delay)
                except DriverError as exc:
                    message = f"Provisioning failed: {exc}"
                    break
                except Exception:
                    log.exception("provisioning %s failed unexpectedly", workstation_id)
                    message = "Provisioning failed because of an internal error."
                    break
                else:
                    with self._db.write() as tx:
                        tx["workstations"].update(workstation_id, {"status": STOPPED})
                        _log_event(tx, workstation_id, self._clock(), "info", "Provisioned; it is stopped.")
                    log.info("workstation %s provisioned", workstation_id)
                    return
            log.error("workstation %s: %s", workstation_id, message)
            # No disk exists, so nothing is billed from here on.
            self._transition(
                ws, self._clock(), None, ("error", message), status=ERROR, status_message=message
            )

    def get(self, principal: Principal, workstation_id: str) -> Workstation:
        return self._load(principal, workstation_id)

    def access(self, ws: Workstation) -> Access | None:
        """How to reach a running workstation; None when that is unknown right now.

        A read of a workstation must not fail because the hypervisor is away:
        the database answers, and access is left out until it is back.
        """
        if ws.status != RUNNING:
            return None
        try:
            return self._driver.access(ws.domain_name)
        except DriverError as exc:
            log.warning("no access details for %s: %s", ws.id, exc)
            return None

    def events(self, principal: Principal, workstation_id: str, limit: int, after: int | None):
        """A page of the workstation's log events, oldest first, and the next cursor."""
        ws = self._load(principal, workstation_id)
        rows = self._db.query(
            "SELECT * FROM workstation_events WHERE workstation_id = ? AND id > ? ORDER BY id LIMIT ?",
            [ws.id, after or 0, limit + 1],
        )
        return (ws, *split_page(rows, limit, "id"))

    def event(self, principal: Principal, workstation_id: str, event_id: int) -> dict:
        ws = self._load(principal, workstation_id)
        row = self._db.query_one(
            "SELECT * FROM workstation_events WHERE workstation_id = ? AND id = ?", [ws.id, event_id]
        )
        if row is None:
            raise NotFound(f"No log {event_id} for workstation {ws.id}.")
        return row

    def console_log(self, principal: Principal, workstation_id: str):
        """The serial console's log file, if the driver keeps one and it exists yet."""
        ws = self._load(principal, workstation_id)
        path = self._driver.console_log(ws.domain_name)
        return path if path is not None and path.is_file() else None

    def usage(
        self,
        principal: Principal,
        workstation_id: str,
        start: float | None = None,
        end: float | None = None,
        granularity: str | None = None,
    ) -> tuple[Workstation, UsageReport]:
        """What a workstation used; a deleted one's usage stays readable by its account."""
        ws = self._load(principal, workstation_id, include_deleted=True)
        if start is not None and end is not None and start >= end:
            raise InvalidRequest(
                "The window is empty: 'from' must be before 'to'.",
                details={"from": ["Must be before 'to'."]},
            )
        return ws, self.ledger.report(ws.id, start, end, granularity)

    def list(
        self,
        principal: Principal,
        limit: int,
        after: int | None = None,
        status: str | None = None,
        type_id: str | None = None,
    ) -> Page:
        """One page in creation order; the cursor is the last row's rowid."""
        clauses = ["deleted_at IS NULL", "rowid > ?", "(account_id = ? OR ?)"]
        params: list = [after or 0, principal.account_id, principal.admin]
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if type_id is not None:
            clauses.append("type = ?")
            params.append(type_id)
        rows = self._db.query(
            "SELECT rowid AS cursor, * FROM workstations WHERE "
            + " AND ".join(clauses)
            + " ORDER BY rowid LIMIT ?",
            [*params, limit + 1],
        )
        rows, next_cursor = split_page(rows, limit, "cursor")
        return Page(items=[_from_row(r) for r in rows], next_cursor=next_cursor)

    # -- transitions ---------------------------------------------------------

    def launch(self, principal: Principal, workstation_id: str) -> Workstation:
        with self._locked(workstation_id):
            ws = self._load(principal, workstation_id)
            if ws.status != STOPPED:
                raise InvalidState(
                    f"Workstation {ws.id} is {ws.status}; only a stopped workstation can be launched."
                )
            gpu, workspace = self._reserve(ws)
            share = self.workspaces.directory(workspace.id) if workspace else None
            try:
                with self._hypervisor("launch"):
                    self._driver.start(ws.domain_name, gpu, share)
            except BaseException:
                self._release(ws)
                raise
            try:
                now = self._clock()
                launched = "Launched" + (f" with the GPU at {gpu.pci_address}" if gpu else "")
                launched += f" and workspace {workspace.id} shared." if workspace else "."
                self._transition(
                    ws,
                    now,
                    RUNNING,
                    ("info", launched),
                    status=RUNNING,
                    started_at=unix_to_rfc3339(now),
                    status_message=None,
                )
            except StorageUnavailable:
                # Unrecorded, the VM would run unbilled until the reconciler
                # adopted it, after the client was told the launch failed.
                self._power_off_unrecorded(ws)
                raise
            finally:
                with self._allocation_lock:
                    self._launching.pop(ws.id, None)
            log.info("workstation %s launched (gpu %s)", ws.id, gpu.pci_address if gpu else None)
            return self._reload(ws.id)

    def _power_off_unrecorded(self, ws: Workstation) -> None:
        try:
            self._driver.destroy(ws.domain_name)
        except DriverError as exc:
            log.error("workstation %s runs unrecorded and could not be powered off: %s", ws.id, exc)
        try:
            self._release(ws)
        except StorageUnavailable:
            pass  # a GPU still marked held on a stopped workstation is freed by the reconciler

    def _reserve(self, ws: Workstation) -> tuple[GpuDevice | None, Workspace | None]:
        """Take what a launch needs, under the allocation lock: capacity, a GPU, its workspace."""
        self.accounts.require_credit(ws.account_id)
        host = self.host_info()
        want = ws.configuration
        with self._allocation_lock:
            self.accounts.require_quota_to_run(
                ws.account_id,
                want.cpu_cores,
                want.memory_gb,
                1 if want.gpu else 0,
                [w.configuration for w in self._launching.values() if w.account_id == ws.account_id],
            )
            running = self._db.query_one(
                "SELECT COALESCE(SUM(cpu_cores), 0) AS cpu, COALESCE(SUM(memory_gb), 0) AS mem"
                " FROM workstations WHERE status = ? AND deleted_at IS NULL",
                [RUNNING],
            )
            starting = [w.configuration for w in self._launching.values()]
            cpu = running["cpu"] + sum(c.cpu_cores for c in starting)
            mem = running["mem"] + sum(c.memory_gb for c in starting)
            if cpu + want.cpu_cores > host.cpu_cores:
                raise Unavailable(
                    f"The host has {host.cpu_cores - cpu} of {host.cpu_cores} CPU cores free;"
                    f" this workstation needs {want.cpu_cores}.",
                    retry_after=60,
                )
            if mem + want.memory_gb > host.memory_gb:
                raise Unavailable(
                    f"The host has {host.memory_gb - mem} of {host.memory_gb} GB of memory free;"
                    f" this workstation needs {want.memory_gb}.",
                    retry_after=60,
                )
            gpu = None
            if want.gpu is not None:
                held = {
                    r["gpu_address"]
                    for r in self._db.query(
                        "SELECT gpu_address FROM workstations WHERE gpu_address IS NOT NULL"
                    )
                }
                free = [g for g in host.gpus if g.model == want.gpu and g.pci_address not in held]
                if not free:
                    raise Unavailable(
                        f"No {want.gpu} GPU is free on this host right now.", retry_after=60
                    )
                gpu = free[0]
                self._set(ws.id, gpu_address=gpu.pci_address)
            # Read again under the lock: archiving or deleting a workspace
            # detaches it, under this same lock.
            workspace_id = self._reload(ws.id).workspace_id
            workspace = self.workspaces.find(workspace_id) if workspace_id else None
            self._launching[ws.id] = replace(ws, workspace_id=workspace_id)
            return gpu, workspace

    def _workstation_holding(self, workspace_id: str) -> str | None:
        """The running or launching workstation a workspace is attached to; under the allocation lock."""
        for launching in self._launching.values():
            if launching.workspace_id == workspace_id:
                return launching.id
        row = self._db.query_one(
            "SELECT id FROM workstations WHERE workspace_id = ? AND status = ? AND deleted_at IS NULL",
            [workspace_id, RUNNING],
        )
        return row["id"] if row else None

    def workspace_of(self, ws: Workstation) -> Workspace | None:
        return self.workspaces.find(ws.workspace_id) if ws.workspace_id else None

    def _release(self, ws: Workstation) -> None:
        with self._allocation_lock:
            self._launching.pop(ws.id, None)
            self._set(ws.id, gpu_address=None)

    def stop(
        self, principal: Principal, workstation_id: str, force: bool = False, reason: str | None = None
    ) -> Workstation:
        """Stop a running workstation; ``reason`` says why when cwhost itself stops it."""
        with self._locked(workstation_id):
            ws = self._load(principal, workstation_id)
            if ws.status != RUNNING:
                raise InvalidState(
                    f"Workstation {ws.id} is {ws.status}; only a running workstation can be stopped."
                )
            self._final_reading(ws)
            timeout = self._config.driver.stop_timeout_seconds
            how = "It was powered off at once, as asked." if force else "The guest powered off when asked."
            with self._hypervisor("stop"):
                try:
                    graceful = not force and self._shut_down_metering(ws, timeout)
                    if not graceful:
                        if not force:
                            how = f"The guest did not power off within {timeout:g} s, so it was forced."
                        self._driver.destroy(ws.domain_name)
                except InvalidDomainState:
                    how = "It had already powered off."
            event = ("warning", f"Stopped because {reason}. {how}") if reason else ("info", f"Stopped. {how}")
            self._transition(
                ws, self._clock(), STOPPED, event, status=STOPPED, started_at=None, gpu_address=None
            )
            log.info("workstation %s stopped (%s)", ws.id, "forced" if force else "graceful")
            return self._reload(ws.id)

    def patch(
        self,
        principal: Principal,
        workstation_id: str,
        name: str | None,
        configuration: dict,
        idle_timeout_minutes: int | None = None,
        running_timeout_minutes: int | None = None,
    ) -> Workstation:
        with self._locked(workstation_id):
            ws = self._load(principal, workstation_id)
            if ws.status != STOPPED:
                raise InvalidState(
                    f"Workstation {ws.id} is {ws.status}; it can be changed only when stopped."
                )
            old = ws.configuration
            new = replace(
                old,
                cpu_cores=configuration.get("cpu_cores", old.cpu_cores),
                memory_gb=configuration.get("memory_gb", old.memory_gb),
                storage_gb=configuration.get("storage_gb", old.storage_gb),
                gpu=configuration.get("gpu", old.gpu),
                region=configuration.get("region", old.region),
            )
            if new.storage_gb < old.storage_gb:
                raise InvalidRequest(
                    f"Storage can grow but never shrink (it is {old.storage_gb} GB).",
                    details={"configuration": {"storageGB": [f"Must be at least {old.storage_gb}."]}},
                )
            self._validate(new)
            with self._allocation_lock:
                self.storage.require(ws.account_id, (new.storage_gb - old.storage_gb) * GIB)
            updated = replace(ws, name=name or ws.name, configuration=new)
            if updated.spec() != ws.spec():
                with self._hypervisor("update"):
                    self._driver.update(updated.spec())
            try:
                self._transition(
                    ws,
                    self._clock(),
                    STOPPED,
                    ("info", _describe_change(ws, updated)),
                    configuration=new,
                    name=updated.name,
                    cpu_cores=new.cpu_cores,
                    memory_gb=new.memory_gb,
                    storage_gb=new.storage_gb,
                    gpu=new.gpu,
                    region=new.region,
                    idle_timeout_minutes=(
                        ws.idle_timeout_minutes
                        if idle_timeout_minutes is None
                        else idle_timeout_minutes
                    ),
                    running_timeout_minutes=(
                        ws.running_timeout_minutes
                        if running_timeout_minutes is None
                        else running_timeout_minutes
                    ),
                )
            except Exception:
                # The domain changed but the record did not: put the domain back
                # (a disk that grew stays grown, which only wastes space).
                if updated.spec() != ws.spec():
                    self._driver.update(replace(ws.spec(), storage_gb=new.storage_gb))
                raise
            return self._reload(ws.id)

    def delete(self, principal: Principal, workstation_id: str) -> None:
        with self._locked(workstation_id):
            ws = self._load(principal, workstation_id)
            if ws.status not in (STOPPED, ERROR):
                raise InvalidState(
                    f"Workstation {ws.id} is {ws.status}; only a stopped or failed workstation"
                    " can be deleted."
                )
            self._set(ws.id, deleted_at=unix_to_rfc3339(self._clock()))
            try:
                with self._hypervisor("delete"):
                    self._driver.delete(ws.domain_name)
            except BaseException:
                self._set(ws.id, deleted_at=None)
                raise
            self._transition(ws, self._clock(), None, ("info", "Deleted, with its disk."))
        with self._locks_guard:
            self._locks.pop(ws.id, None)
        log.info("workstation %s deleted", ws.id)

    # -- host ----------------------------------------------------------------

    def host_view(self) -> HostView:
        info = self.host_info()
        rows = self._db.query(
            "SELECT * FROM workstations WHERE deleted_at IS NULL"
            " AND (status = ? OR gpu_address IS NOT NULL)",
            [RUNNING],
        )
        running = [_from_row(r) for r in rows if r["status"] == RUNNING]
        holders = {r["gpu_address"]: _from_row(r) for r in rows if r["gpu_address"]}
        return HostView(
            info=info,
            regions=self._config.regions,
            cpu_cores_allocated=sum(w.configuration.cpu_cores for w in running),
            memory_gb_allocated=sum(w.configuration.memory_gb for w in running),
            gpus=tuple(GpuSlot(g, holders.get(g.pci_address)) for g in info.gpus),
        )

    # -- start-up and shut-down ----------------------------------------------

    def recover(self) -> None:
        """At start-up: reconcile, provision again what a crash left provisioning, tidy workspaces."""
        self.workspaces.recover()
        self.reconcile(resume_provisioning=True)

    def reconcile(self, resume_provisioning: bool = False) -> None:
        """Bring the database in line with the hypervisor, which is the truth about domains.

        A workstation with a transition in flight is skipped: the transition
        itself leaves it consistent, and the next round looks again.
        """
        domains = self._driver.list_domains()
        # Deleted workstations only while their domain is still there (a
        # deletion interrupted): the rest of the ever-growing history is done.
        rows = self._db.query(
            "SELECT * FROM workstations WHERE deleted_at IS NULL"
            " OR id IN (SELECT value FROM json_each(?))",
            [json.dumps([name.removeprefix(DOMAIN_PREFIX) for name in domains if name.startswith(DOMAIN_PREFIX)])],
        )
        for row in rows:
            with self._locks_guard:
                lock = self._locks[row["id"]]
            if not lock.acquire(blocking=False):
                continue
            try:
                ws = _from_row(row)
                self._reconcile_one(ws, row["deleted_at"], domains.get(ws.domain_name), resume_provisioning)
            finally:
                lock.release()
        known = {domain_name(r["id"]) for r in rows}
        for name in domains.keys() - known - self._foreign_reported:
            log.warning("domain %s is not a cwhost workstation; leaving it alone", name)
            self._foreign_reported.add(name)

    def _reconcile_one(self, ws: Workstation, deleted_at, state, resume_provisioning) -> None:
        if deleted_at:
            if state is not None:
                log.warning("finishing the deletion of %s", ws.id)
                if state == DomainState.RUNNING:
                    self._driver.destroy(ws.domain_name)
                self._driver.delete(ws.domain_name)
                self._transition(
                    ws, self._clock(), None, ("warning", "Its deletion, interrupted, was finished.")
                )
        elif ws.status == PROVISIONING:
            if resume_provisioning:
                self._executor.submit(self._provision, ws.id)
        elif state is None and ws.status in (STOPPED, RUNNING):
            log.error("workstation %s has no domain on the hypervisor", ws.id)
            gone = "Its virtual machine no longer exists on the hypervisor."
            self._transition(
                ws,
                self._last_seen(ws),
                None,
                ("error", gone),
                status=ERROR,
                started_at=None,
                gpu_address=None,
                status_message=gone,
            )
        elif state == DomainState.RUNNING and ws.status != RUNNING:
            log.warning("workstation %s is running on the hypervisor; recording it", ws.id)
            now = self._clock()
            self._transition(
                ws,
                now,
                RUNNING,
                ("warning", "Found running on the hypervisor; recorded as running."),
                status=RUNNING,
                started_at=ws.started_at or unix_to_rfc3339(now),
            )
        elif state == DomainState.STOPPED and (ws.status == RUNNING or ws.gpu_address):
            log.warning("workstation %s is not running on the hypervisor; recording it", ws.id)
            at = self._last_seen(ws) if ws.status == RUNNING else self._clock()
            self._transition(
                ws,
                at,
                STOPPED,
                ("warning", "Found not running on the hypervisor (its VM stopped); recorded as stopped."),
                status=STOPPED,
                started_at=None,
                gpu_address=None,
            )

    def reconcile_periodically(self, stop: threading.Event, interval_seconds: float) -> None:
        """Reconcile and enforce every interval until ``stop`` is set.

        The hypervisor's absence is no crash: the next round tries again.
        """
        while not stop.wait(interval_seconds):
            try:
                self.reconcile()
                self.enforce()
            except HypervisorUnavailable as exc:
                log.warning("hypervisor unavailable; reconciliation waits: %s", exc)
            except StorageUnavailable as exc:
                log.warning("database unavailable; reconciliation waits: %s", exc.message)
            except Exception:
                log.exception("reconciliation failed; trying again next interval")

    def enforce(self) -> None:
        """Stop what must stop: workstations of accounts out of credit, and those past a timeout.

        Each stop is graceful and runs in the background, so that one slow guest
        does not hold up the others; a workstation already stopping is left to it.
        """
        reasons: dict[str, str] = {}
        if self._config.credits_when_exhausted == "stop":
            for account_id in self.accounts.exhausted():
                for row in self._db.query(
                    "SELECT id FROM workstations WHERE account_id = ? AND status = ?"
                    " AND deleted_at IS NULL",
                    [account_id, RUNNING],
                ):
                    reasons[row["id"]] = "its account's credits are used up"
        now = self._clock()
        for row in self._db.query(
            "SELECT * FROM workstations WHERE status = ? AND deleted_at IS NULL", [RUNNING]
        ):
            ws = _from_row(row)
            if ws.id in reasons or not ws.started_at:
                continue
            running_for = now - rfc3339_to_unix(ws.started_at)
            if ws.running_timeout_minutes and running_for >= ws.running_timeout_minutes * 60:
                reasons[ws.id] = f"it ran for its runningTimeoutMinutes ({ws.running_timeout_minutes})"
            elif ws.idle_timeout_minutes and self._idle(ws, ws.idle_timeout_minutes * 60, now):
                reasons[ws.id] = f"it was idle for its idleTimeoutMinutes ({ws.idle_timeout_minutes})"
        for workstation_id, reason in reasons.items():
            self._executor.submit(self._stop_because, workstation_id, reason)

    def _idle(self, ws: Workstation, seconds: float, now: float) -> bool:
        """Every reading of the last ``seconds`` below the idle share of the workstation's cores."""
        window = self._db.query_one(
            "SELECT MIN(since) AS since, MAX(cpu_seconds / (sampled_at - since)) AS busiest"
            " FROM usage_samples WHERE workstation_id = ? AND sampled_at > ?",
            [ws.id, now - seconds],
        )
        if window["since"] is None or window["since"] > now - seconds:
            return False
        return window["busiest"] < self._config.sampler.idle_cpu_share * ws.configuration.cpu_cores

    def _stop_because(self, workstation_id: str, reason: str) -> None:
        log.warning("stopping workstation %s: %s", workstation_id, reason)
        try:
            self.stop(SYSTEM, workstation_id, reason=reason)
        except (InvalidState, NotFound):
            pass  # it stopped, or went, meanwhile
        except Exception:
            log.exception("could not stop %s (%s); the next round tries again", workstation_id, reason)

    def _last_seen(self, ws: Workstation) -> float:
        """When a domain that vanished unwatched was last known to run: its last reading."""
        row = self._db.query_one(
            "SELECT sampled_at FROM meter_state WHERE workstation_id = ?", [ws.id]
        )
        started = self._db.query_one(
            "SELECT MAX(started_at) AS at FROM usage_segments WHERE workstation_id = ?", [ws.id]
        )
        candidates = [v for v in (row and row["sampled_at"], started and started["at"]) if v]
        return max(candidates) if candidates else self._clock()

    def wait_idle(self) -> None:
        """Finish background provisioning; used at shut-down."""
        self._executor.shutdown(wait=True)
