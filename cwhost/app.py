"""The application factory: wires configuration, database, driver, service and API.

It starts no thread and runs no migration: ``cwhost serve`` does those once, so a
test or a reloader that builds a second app never starts a second sampler or
races a migration.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from prometheus_client import CollectorRegistry

from cwhost.account_usage import AccountUsageReports
from cwhost.accounts import Accounts
from cwhost.allocation import Allocation
from cwhost.api import init_api
from cwhost.api.ratelimit import RateLimiter
from cwhost.auth import TokenVerifier
from cwhost.config import Config, ConfigError
from cwhost.console import ConsoleTokens
from cwhost.db import Database
from cwhost.enforcer import Enforcer
from cwhost.images.guest_files import CDP_GUEST_PORT
from cwhost.metrics import SamplerMetrics, build_registry
from cwhost.reconciler import Reconciler
from cwhost.sampler import GpuReader, Sampler
from cwhost.ssh_keys import SshKeys
from cwhost.storage_budget import StorageBudget
from cwhost.usage import UsageLedger
from cwhost.workspaces import Workspaces
from cwhost.workstations.guards import read_host
from cwhost.workstations.guest_actions import GuestActions
from cwhost.workstations.lifecycle import Lifecycle
from cwhost.workstations.store import WorkstationStore
from drivers.base import DriverError, HostInfo, HypervisorDriver
from drivers.fake import FakeDriver, GuestLoad


@dataclass
class Services:
    """The domain's parts, side by side; each view and thread asks for the one it needs."""

    store: WorkstationStore
    ledger: UsageLedger
    accounts: Accounts
    workspaces: Workspaces
    storage: StorageBudget
    allocation: Allocation
    lifecycle: Lifecycle
    reconciler: Reconciler
    enforcer: Enforcer
    ssh_keys: SshKeys
    account_usage: AccountUsageReports
    guest_actions: GuestActions


def build_services(db: Database, driver: HypervisorDriver, config: Config, clock=time.time) -> Services:
    """Wire the parts. Workspaces and allocation share one lock, and storage is counted across both,
    so some parts reach each other through late-bound callables."""
    store = WorkstationStore(db, clock)
    ledger = UsageLedger(db, config.pricing, clock)
    accounts = Accounts(db, config, ledger, clock, storage_used_bytes=lambda account: storage.used_bytes(account))
    allocation = Allocation(
        store,
        accounts,
        config,
        lambda: read_host(driver),
        find_workspace=lambda wid: workspaces.find(wid),
        forwards_ports=driver.forwards_ports,
    )
    workspaces, storage = _workspaces_and_storage(db, config, driver, store, accounts, allocation, clock)
    ssh_keys = SshKeys(db, clock)
    lifecycle = Lifecycle(store, allocation, accounts, workspaces, storage, ssh_keys, driver, config, clock)
    reconciler = Reconciler(store, lifecycle, workspaces, ledger, driver, clock)
    enforcer = Enforcer(store, accounts, ledger, lifecycle, config, clock)
    account_usage = AccountUsageReports(db, ledger, clock)
    return Services(
        store,
        ledger,
        accounts,
        workspaces,
        storage,
        allocation,
        lifecycle,
        reconciler,
        enforcer,
        ssh_keys,
        account_usage,
        GuestActions(store, driver, config),
    )


def _workspaces_and_storage(db, config, driver, store, accounts, allocation, clock) -> tuple[Workspaces, StorageBudget]:
    """Storage is counted across workstations and workspaces, and uploads hold the budget's lock."""
    storage_lock = threading.Lock()
    workspaces = Workspaces(
        db,
        config.workspaces_dir,
        config.workspaces.max_upload_bytes,
        lock=allocation.lock,
        storage_lock=storage_lock,
        workstation_holding=allocation.workstation_holding,
        clock=clock,
        require_storage=lambda account, more: storage.require(account, more),
        detached=store.read_back,
    )
    storage = StorageBudget(
        db,
        config,
        workspaces.bytes_used,
        host_storage_gb=lambda: read_host(driver).storage_gb,
        account_limit_gb=lambda account: accounts.limits(account).max_storage_gb,
        lock=storage_lock,
    )
    return workspaces, storage


@dataclass
class Components:
    config: Config
    db: Database
    driver: HypervisorDriver
    services: Services
    metrics_registry: CollectorRegistry
    sampler_metrics: SamplerMetrics
    # Admission of API requests; see server.max_in_flight.
    in_flight: threading.BoundedSemaphore
    rate_limiter: RateLimiter
    tokens: TokenVerifier
    # The browser console's links and WebSocket tokens; None when [console] port is 0.
    console: ConsoleTokens | None
    # The tokens of access.browser.cdpUrl; None when [browser] port is 0.
    browser: ConsoleTokens | None


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
    """Where the host reaches a running workstation's DevTools relay (on its private network); None otherwise."""

    def address(workstation_id: str) -> tuple[str, int] | None:
        ws = store.running_one(workstation_id)
        if ws is None:
            return None
        try:
            return driver.guest_endpoint(ws.domain_name, CDP_GUEST_PORT)
        except DriverError:
            return None

    return address


def make_sampler(components: Components) -> Sampler:
    config = components.config
    return Sampler(
        components.db,
        components.driver,
        interval_seconds=config.sampler.interval_seconds,
        retention_seconds=config.sampler.retention_days * 86400,
        running=components.services.store.running,
        after_tick=components.services.enforcer.stop_the_out_of_credit,
        metrics=components.sampler_metrics,
    )


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
            GuestLoad(cpu_share=fake.guest_cpu_share, memory_mb=fake.guest_memory_mb),
        )
    return _libvirt_driver(config)


def _libvirt_driver(config: Config) -> HypervisorDriver:
    try:
        from drivers.kvm import LibvirtDriver
        from drivers.libvirt_network import GuestNetwork
        from drivers.libvirt_xml import KernelBoot
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
    registry, sampler_metrics = build_registry(services.ledger)
    app.extensions["cwhost"] = Components(
        config=config,
        db=db,
        driver=driver,
        services=services,
        metrics_registry=registry,
        sampler_metrics=sampler_metrics,
        in_flight=threading.BoundedSemaphore(config.server.max_in_flight),
        rate_limiter=RateLimiter(config.server.rate_limit_per_minute),
        tokens=TokenVerifier(db),
        console=ConsoleTokens(_vnc_address(services.store, driver), config.console.link_seconds)
        if config.console.port
        else None,
        browser=ConsoleTokens(_cdp_address(services.store, driver), config.console.link_seconds)
        if config.browser.port
        else None,
    )
    init_api(app)
    return app
