"""The application factory: builds the parts bottom-up and puts them behind the API.

It starts no thread and runs no migration: ``cwhost serve`` does those once, so a
test or a reloader that builds a second app never starts a second sampler or
races a migration.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from pathlib import Path

from flask import Flask

from cwhost.accounts.credit import Accounts
from cwhost.accounts.limits import AccountLimitsBook
from cwhost.accounts.ssh_keys import SshKeys
from cwhost.accounts.tokens import TokenVerifier
from cwhost.api import init_api
from cwhost.api.components import Components
from cwhost.api.ratelimit import RateLimiter
from cwhost.config.server import Config, ConfigError
from cwhost.db.database import Database
from cwhost.images.catalog import ImageCatalog
from cwhost.images.desktop_files import CDP_GUEST_PORT
from cwhost.remote.door_tokens import DoorTokens, NotReady
from cwhost.remote.live_views import LiveViews
from cwhost.usage.account_report import AccountUsageReports
from cwhost.usage.ledger import UsageLedger
from cwhost.usage.metrics import build_registry
from cwhost.usage.month_to_date import MonthToDateCosts
from cwhost.usage.sampler import GpuReader, ProcessReader, Sampler
from cwhost.web import init_web
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
from cwhost.workstations.guest_service import GuestServices
from cwhost.workstations.host_keys import HostKeys
from cwhost.workstations.lifecycle import Lifecycle
from cwhost.workstations.processes import Processes
from cwhost.workstations.readiness import Readiness
from cwhost.workstations.reconciler import Reconciler
from cwhost.workstations.recordings import Recordings
from cwhost.workstations.services import Services
from cwhost.workstations.sizing import Images
from cwhost.workstations.store import WorkstationStore
from cwhost.workstations.terminals import Terminals
from cwhost.workstations.workspace_retirement import WorkspaceRetirement
from drivers.base import DriverError, HostInfo, HypervisorDriver
from drivers.fake.driver import FakeDriver, GuestLoad


def build_services(
    db: Database,
    driver: HypervisorDriver,
    config: Config,
    clock=time.time,
    processes: ProcessReader | None = None,
    gpus: GpuReader | None = None,
) -> Services:
    """Build the parts bottom-up, each from parts that exist already.

    ``processes`` and ``gpus`` are what the sampler reads (by default /proc and NVML).
    """
    store = WorkstationStore(db, clock)
    ledger = UsageLedger(db, config.pricing, clock)
    metrics_registry, sampler_metrics = build_registry(ledger)
    sampler = Sampler(
        db, driver, config.sampler.interval_seconds, config.sampler.retention_days * 86400,
        running=store.running, processes=processes, gpus=gpus, clock=clock, metrics=sampler_metrics,
    )  # fmt: skip
    limits = AccountLimitsBook(db, config.limits)
    workspaces = Workspaces(db, config.workspaces_dir, clock)
    storage = StorageBudget(db, workspaces, driver, limits, config.workstation.storage_overcommit)
    accounts = Accounts(db, config.pricing, ledger, limits, storage, clock)
    ssh_keys = SshKeys(db, clock)
    allocation = Allocation(store, accounts, limits, workspaces, driver, config)
    locks, live, background = WorkstationLocks(), LiveAccess(driver), BackgroundWork()
    images = Images(ImageCatalog(config.images_dir), required=driver.boots_images)
    host_keys, guests = HostKeys(config.data_dir / "host-keys"), GuestServices(store, driver, config)
    recordings = Recordings(db, store, driver, storage, config, clock)
    lifecycle = Lifecycle(
        store, allocation, accounts, workspaces, storage, ssh_keys, driver, config, locks=locks, live=live,
        images=images, background=background, host_keys=host_keys, final_reading=sampler, recordings=recordings,
        clock=clock,
    )  # fmt: skip
    reconciler = Reconciler(
        store, lifecycle, workspaces, ledger, driver,
        locks=locks, live=live, background=background, host_keys=host_keys, clock=clock,
    )  # fmt: skip
    return Services(
        store, ledger, MonthToDateCosts(ledger, config.pricing, clock), AccountUsageReports(db, ledger, clock),
        limits, accounts, ssh_keys,
        workspaces, storage, WorkspaceFiles(workspaces, storage, config.workspaces.max_upload_bytes),
        locks, live, images, background, host_keys, sampler, sampler_metrics, metrics_registry,
        allocation, WorkspaceRetirement(db, workspaces, store, allocation, clock), lifecycle,
        GuestActions(store, driver, config), Readiness(store, driver, locks, config.readiness, clock),
        reconciler, Enforcer(store, accounts, ledger, lifecycle, background, config, clock),
        Processes(guests, config, clock), GuestFs(guests, config), Terminals(guests, config, clock), recordings,
        Audio(guests), _stream_slots(config),
    )  # fmt: skip


def _stream_slots(config: Config) -> AccountSlots:
    streams = config.streams
    return AccountSlots(streams.max_per_account, "streams and waits", "streams.max_per_account", streams.max_open)


def _vnc_address(store: WorkstationStore, driver: HypervisorDriver):
    """Where a running workstation's VNC listens, for the console bridge; None if it is not running."""

    def address(workstation_id: str) -> tuple[str, int] | None:
        ws = store.running_one(workstation_id)
        if ws is None:
            return None
        try:
            access = driver.access(ws.domain_name)
        except DriverError:
            return None
        console = access.console if access else None
        return (console.host, console.port) if console and console.protocol == "vnc" else None

    return address


def _cdp_address(store: WorkstationStore, driver: HypervisorDriver):
    """Where the host reaches a running workstation's DevTools relay (on its private network); None otherwise,
    and NotReady before its guest has said it is ready."""

    def address(workstation_id: str) -> tuple[str, int] | None:
        ws = store.running_one(workstation_id)
        if ws is None:
            return None
        if not ws.ready:
            raise NotReady(workstation_id)
        try:
            return driver.guest_endpoint(ws.domain_name, CDP_GUEST_PORT)
        except DriverError:
            return None

    return address


def make_driver(config: Config) -> HypervisorDriver:
    if config.driver.name == "fake":
        fake = config.driver.fake
        return FakeDriver(
            config.data_dir / "fake-driver",
            HostInfo(
                cpu_cores=fake.cpu_cores,
                memory_gb=fake.memory_gb,
                storage_gb=fake.storage_gb,
                gpus=fake.gpus,
            ),
            GuestLoad(
                cpu_share=fake.guest_cpu_share, memory_mb=fake.guest_memory_mb, ready_seconds=fake.guest_ready_seconds
            ),
        )
    return _libvirt_driver(config)


def _libvirt_driver(config: Config) -> HypervisorDriver:
    try:
        from drivers.libvirt.domain_xml import KernelBoot
        from drivers.libvirt.driver import LibvirtDriver
        from drivers.libvirt.network import GuestNetwork
    except ImportError as exc:
        raise ConfigError(
            f"driver.name = 'libvirt' needs libvirt-python ({exc}): pip install 'cwhost[libvirt]'"
        ) from exc
    settings = config.driver.libvirt
    return LibvirtDriver(
        settings.uri,
        disk_dir=config.disk_dir,
        console_dir=config.data_dir / "consoles",
        domain_type=settings.domain_type,
        network=settings.network
        or GuestNetwork(settings.guest_network, settings.guest_bridge, ipaddress.IPv4Network(settings.guest_subnet)),
        graphics=settings.graphics or None,
        kernel_boot=(
            KernelBoot(settings.kernel, settings.initrd or None, settings.cmdline or None) if settings.kernel else None
        ),
        base_image=Path(settings.base_image) if settings.base_image else None,
        pid_dir=Path(settings.pid_dir),
        gpu_vendors=settings.gpu_vendors,
        gpu_names=GpuReader().names(),
    )


def create_app(config: Config, driver: HypervisorDriver | None = None) -> Flask:
    logging.getLogger("cwhost").setLevel(config.log_level)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    app = Flask("cwhost")
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    db = Database(config.database_path)
    driver = driver or make_driver(config)
    services = build_services(db, driver, config)
    Components(
        config=config,
        db=db,
        driver=driver,
        services=services,
        in_flight=threading.BoundedSemaphore(config.server.max_in_flight),
        rate_limiter=RateLimiter(config.server.rate_limit_per_minute),
        tokens=TokenVerifier(db),
        console=DoorTokens(_vnc_address(services.store, driver), config.console.link_seconds)
        if config.console.port
        else None,
        live_views=LiveViews(_vnc_address(services.store, driver), config.console.live_views_per_workstation),
        browser=DoorTokens(_cdp_address(services.store, driver), config.console.link_seconds)
        if config.browser.port
        else None,
    ).install(app)
    init_api(app)
    init_web(app)
    return app
