"""recover(): after a crash at any point of a transition, the database and hypervisor agree again."""

from __future__ import annotations

import logging
import threading
import time

from cwhost.model import domain_name
from drivers.base import DomainSpec, DomainState
from tests.helpers import create_stopped, wait_for_status


def _force_row(components, ws_id, **columns):
    """The row as a crash left it, read as the restarted service would."""
    with components.db.write() as tx:
        tx["workstations"].update(ws_id, columns)
    components.services.store.read_back([ws_id])


def test_a_workstation_left_provisioning_is_provisioned(client, alice, components):
    ws = create_stopped(client, alice)
    components.driver.delete(domain_name(ws["id"]))
    _force_row(components, ws["id"], status="provisioning")
    components.services.reconciler.recover()
    wait_for_status(client, alice, ws["id"], "stopped")
    assert components.driver.state(domain_name(ws["id"])) == DomainState.STOPPED


def test_a_domain_started_before_the_crash_is_recorded_running_with_its_gpu(client, alice, admin, components):
    ws = create_stopped(client, alice, gpu="NVIDIA L40S")
    gpu = next(g for g in components.driver.host().gpus if g.model == "NVIDIA L40S")
    # The crash came after the GPU was reserved and the domain started, before
    # the state was written.
    _force_row(components, ws["id"], gpu_address=gpu.pci_address)
    components.driver.start(domain_name(ws["id"]), gpu)
    components.services.reconciler.recover()
    after = client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()
    assert after["status"] == "running" and after["startedAt"]
    gpus = client.get("/v1/host", headers=admin).get_json()["gpus"]
    assert next(g for g in gpus if g["model"] == "NVIDIA L40S")["holder"] == ws["id"]


def test_a_gpu_reserved_for_a_launch_that_never_started_is_freed(client, alice, admin, components):
    ws = create_stopped(client, alice, gpu="NVIDIA L40S")
    _force_row(components, ws["id"], gpu_address="0000:ca:00.0")
    components.services.reconciler.recover()
    gpus = client.get("/v1/host", headers=admin).get_json()["gpus"]
    assert all(g["state"] == "free" for g in gpus)
    assert client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice).status_code == 200


def test_a_domain_that_died_is_recorded_stopped(client, alice, components):
    ws = create_stopped(client, alice)
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    components.driver.destroy(domain_name(ws["id"]))
    components.services.reconciler.recover()
    after = client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()
    assert after["status"] == "stopped" and after["startedAt"] is None


def test_an_interrupted_delete_is_finished(client, alice, components):
    ws = create_stopped(client, alice)
    _force_row(components, ws["id"], deleted_at="2026-01-01T00:00:00Z")
    components.services.reconciler.recover()
    assert components.driver.list_domains() == {}
    assert client.get(f"/v1/workstations/{ws['id']}", headers=alice).status_code == 404


def test_a_vanished_domain_puts_the_workstation_in_error(client, alice, components):
    ws = create_stopped(client, alice)
    components.driver.delete(domain_name(ws["id"]))
    components.services.reconciler.recover()
    after = client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()
    assert after["status"] == "error"
    assert "no longer exists" in after["statusMessage"]
    assert client.delete(f"/v1/workstations/{ws['id']}", headers=alice).status_code == 204


def test_foreign_domains_are_left_alone(components, caplog):
    components.driver.define(DomainSpec("someone-elses-vm", "theirs", 1, 1, 1))
    with caplog.at_level(logging.WARNING):
        components.services.reconciler.recover()
    assert components.driver.list_domains() == {"someone-elses-vm": DomainState.STOPPED}
    assert any("someone-elses-vm" in r.getMessage() for r in caplog.records)


def test_reconciliation_runs_periodically_without_a_restart(client, alice, components):
    ws = create_stopped(client, alice)
    client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    stop = threading.Event()
    services = components.services
    loop = threading.Thread(target=services.reconciler.run, args=(stop, 0.05, services.enforcer.enforce))
    loop.start()
    try:
        components.driver.destroy(domain_name(ws["id"]))  # the VM died on its own
        wait_for_status(client, alice, ws["id"], "stopped", timeout=5)
        components.driver.set_available(False)  # and then the hypervisor went away
        time.sleep(0.2)
        assert loop.is_alive()
    finally:
        stop.set()
        loop.join(timeout=5)
        components.driver.set_available(True)


def test_a_workstation_in_transition_is_left_to_its_transition(client, alice, components):
    ws = create_stopped(client, alice)
    components.driver.start(domain_name(ws["id"]))  # as if a launch were half-way
    with components.services.locks.held(ws["id"]):
        components.services.reconciler.reconcile()
        assert client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()["status"] == "stopped"
    components.services.reconciler.reconcile()
    assert client.get(f"/v1/workstations/{ws['id']}", headers=alice).get_json()["status"] == "running"


def test_a_foreign_domain_is_reported_once(components, caplog):
    components.driver.define(DomainSpec("someone-elses-vm", "theirs", 1, 1, 1))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            components.services.reconciler.reconcile()
    assert len([r for r in caplog.records if "someone-elses-vm" in r.getMessage()]) == 1
