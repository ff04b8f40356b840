"""Reads of workstations ask the hypervisor nothing: what only it knows is taken at launch and by the reconciler."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from cwhost.accounts import tokens as auth
from cwhost.app import create_app
from cwhost.db.database import Database
from drivers.fake.driver import FakeDriver
from tests.helpers import bearer, create_stopped, make_config, power_off_fake_guests


class CountingDriver(FakeDriver):
    """The fake driver, counting the calls made to it, whose guests report an address once asked twice."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: Counter = Counter()
        self.addresses = ()

    def access(self, name):
        self.calls["access"] += 1
        found = super().access(name)
        return replace(found, ip_addresses=self.addresses) if found else None

    def state(self, name):
        self.calls["state"] += 1
        return super().state(name)


@pytest.fixture
def counted(tmp_path):
    config = make_config(tmp_path / "data")
    Database(config.database_path).migrate()
    from cwhost.app import make_driver

    base = make_driver(config)
    driver = CountingDriver(tmp_path / "data" / "fake-driver", base.host())
    app = create_app(config, driver=driver)
    yield app, driver, bearer(auth.create_key(app.extensions["cwhost"].db, "alice").token)
    app.extensions["cwhost"].services.background.wait_idle()
    power_off_fake_guests(config.data_dir)


def test_lists_and_reads_make_no_driver_call(counted):
    app, driver, alice = counted
    client = app.test_client()
    ids = [create_stopped(client, alice, name=f"w{i}", cpuCores=1, memoryGB=1)["id"] for i in range(3)]
    launched = [client.post(f"/v1/workstations/{i}/launch", headers=alice).get_json() for i in ids]
    assert all(w["access"]["console"]["port"] for w in launched)
    driver.calls.clear()
    listed = client.get("/v1/workstations", headers=alice).get_json()["data"]
    one = client.get(f"/v1/workstations/{ids[0]}", headers=alice).get_json()
    assert sum(driver.calls.values()) == 0
    assert [w["access"]["console"]["password"] for w in listed] == [w["access"]["console"]["password"] for w in launched]
    assert one["access"]["console"]["port"] == listed[0]["access"]["console"]["port"]
    for workstation_id in ids:
        client.post(f"/v1/workstations/{workstation_id}/stop", headers=alice, query_string={"force": "true"})


def test_the_reconciler_brings_the_guests_addresses_and_a_stop_forgets_them(counted):
    app, driver, alice = counted
    client = app.test_client()
    workstation_id = create_stopped(client, alice, cpuCores=1, memoryGB=1)["id"]
    launched = client.post(f"/v1/workstations/{workstation_id}/launch", headers=alice).get_json()
    assert launched["access"]["ipAddresses"] == []
    driver.addresses = ("10.0.2.15",)  # the guest's agent is up
    url = f"/v1/workstations/{workstation_id}"
    assert client.get(url, headers=alice).get_json()["access"]["ipAddresses"] == []
    app.extensions["cwhost"].services.reconciler.reconcile()
    assert client.get(url, headers=alice).get_json()["access"]["ipAddresses"] == ["10.0.2.15"]
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})
    assert app.extensions["cwhost"].services.live.get(workstation_id) is None


def test_a_restarted_service_knows_its_running_workstations_consoles_after_recovery(counted, tmp_path):
    app, driver, alice = counted
    client = app.test_client()
    workstation_id = create_stopped(client, alice, cpuCores=1, memoryGB=1)["id"]
    password = client.post(f"/v1/workstations/{workstation_id}/launch", headers=alice).get_json()["access"]["console"][
        "password"
    ]
    restarted = create_app(app.extensions["cwhost"].config, driver=driver)
    restarted.extensions["cwhost"].services.reconciler.recover()
    shown = restarted.test_client().get(f"/v1/workstations/{workstation_id}", headers=alice).get_json()
    assert shown["access"]["console"]["password"] == password
    restarted.test_client().post(
        f"/v1/workstations/{workstation_id}/stop", headers=alice, query_string={"force": "true"}
    )
    restarted.extensions["cwhost"].services.background.wait_idle()
