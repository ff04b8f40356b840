"""Fixtures and hooks; what tests share besides them is in tests/helpers.py."""

from __future__ import annotations

import os

import pytest

from cwhost.accounts import tokens as auth
from cwhost.app import create_app
from cwhost.db.database import Database
from tests.helpers import bearer, create_stopped, make_config, power_off_fake_guests, start_server, started_server_logs


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With CWHOST_FORBID_SKIPS=1 (set by .ci/run) a skipped test fails: CI must run everything."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CWHOST_FORBID_SKIPS") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped, and skips are forbidden here: {report.longrepr}"
    if report.failed:
        for log_path in started_server_logs:
            if log_path.exists():
                tail = log_path.read_text(errors="replace").splitlines()[-40:]
                report.sections.append((f"server log {log_path.name}", "\n".join(tail)))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    started_server_logs.clear()


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path / "data")


@pytest.fixture
def app(config):
    Database(config.database_path).migrate()
    app = create_app(config)
    yield app
    app.extensions["cwhost"].services.background.wait_idle()
    power_off_fake_guests(config.data_dir)


@pytest.fixture
def components(app):
    return app.extensions["cwhost"]


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def alice(components):
    return bearer(auth.create_key(components.db, "alice").token)


@pytest.fixture
def bob(components):
    return bearer(auth.create_key(components.db, "bob").token)


@pytest.fixture
def running_url(client, alice):
    """The URL of a running workstation of alice's (fake driver), stopped after the test."""
    workstation = create_stopped(client, alice, cpuCores=1, memoryGB=1)
    client.post(f"/v1/workstations/{workstation['id']}/launch", headers=alice)
    yield f"/v1/workstations/{workstation['id']}"
    client.post(f"/v1/workstations/{workstation['id']}/stop", headers=alice, query_string={"force": "true"})


@pytest.fixture
def admin(components):
    return bearer(auth.create_key(components.db, "ops", admin=True).token)


@pytest.fixture
def server(tmp_path):
    running = start_server(tmp_path)
    yield running
    if running.process.poll() is None:
        running.stop()
    power_off_fake_guests(tmp_path / "server-data")
