"""A running workstation says when it is ready, as its own guest reports (the fake driver's guests
report as the images' do), and a client can wait for it without holding a request slot."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from cwhost.model import domain_name
from cwhost.workstations.readiness import Readiness
from tests.helpers import app_with, bearer, create_stopped


def _launched(client, alice) -> tuple[str, str]:
    ws = create_stopped(client, alice)
    url = f"/v1/workstations/{ws['id']}"
    assert client.post(url + "/launch", headers=alice).status_code == 200
    return ws["id"], url


def _messages(components, workstation_id: str) -> list[str]:
    return [entry.message for entry in components.services.store.events(workstation_id, 1000, None)[0]]


def test_a_launched_workstation_is_not_ready_until_its_guest_says_so_then_is_with_its_phases(client, alice, components):
    workstation_id, url = _launched(client, alice)
    shown = client.get(url, headers=alice).get_json()
    assert shown["status"] == "running" and shown["ready"] is False and shown["readyAt"] is None
    components.services.readiness.check()
    shown = client.get(url, headers=alice).get_json()
    assert shown["ready"] is True and shown["readyAt"] is not None and shown["statusMessage"] is None
    ready = [m for m in _messages(components, workstation_id) if m.startswith("Ready ")]
    assert len(ready) == 1 and "after its launch" in ready[0]
    assert "kernel" in ready[0] and "first-boot" in ready[0] and "sshd" in ready[0]
    components.services.readiness.check()
    assert len([m for m in _messages(components, workstation_id) if m.startswith("Ready ")]) == 1


def test_a_stop_forgets_readiness_and_a_relaunch_waits_for_the_guest_again(client, alice, components):
    workstation_id, url = _launched(client, alice)
    components.services.readiness.check()
    stopped = client.post(url + "/stop?force=true", headers=alice).get_json()
    assert stopped["ready"] is False and stopped["readyAt"] is None
    assert client.post(url + "/launch", headers=alice).get_json()["ready"] is False
    components.services.readiness.check()
    assert client.get(url, headers=alice).get_json()["ready"] is True


def test_a_guest_never_ready_gets_a_log_entry_and_a_status_message_and_stays_running(client, alice, components):
    ws = create_stopped(client, alice)
    components.driver.set_never_ready(domain_name(ws["id"]), True)
    url = f"/v1/workstations/{ws['id']}"
    client.post(url + "/launch", headers=alice)
    services = components.services
    later = Readiness(
        services.store,
        components.driver,
        services.locks,
        replace(components.config.readiness, timeout_seconds=10),
        clock=lambda: time.time() + 11,
    )
    later.check()
    later.check()
    shown = client.get(url, headers=alice).get_json()
    assert shown["status"] == "running" and shown["ready"] is False
    assert "Not ready" in shown["statusMessage"]
    warnings = [m for m in _messages(components, ws["id"]) if m.startswith("Not ready")]
    assert len(warnings) == 1 and "last said: kernel" in warnings[0] and "not ready" in warnings[0]
    # Should it get there after all, it is recorded ready and the message goes.
    components.driver.set_never_ready(domain_name(ws["id"]), False)
    later.check()
    shown = client.get(url, headers=alice).get_json()
    assert shown["ready"] is True and shown["statusMessage"] is None


def test_a_wait_for_readiness_answers_as_soon_as_the_guest_is_ready(client, alice, components):
    _, url = _launched(client, alice)
    threading.Timer(0.5, components.services.readiness.check).start()
    began = time.monotonic()
    waited = client.get(url + "?wait=ready&timeoutSeconds=20", headers=alice)
    assert waited.status_code == 200 and waited.get_json()["ready"] is True
    assert time.monotonic() - began < 10


def test_a_wait_ends_at_its_timeout_and_a_stopped_workstation_answers_at_once(client, alice, components):
    ws = create_stopped(client, alice)
    components.driver.set_never_ready(domain_name(ws["id"]), True)
    url = f"/v1/workstations/{ws['id']}"
    began = time.monotonic()
    assert client.get(url + "?wait=ready&timeoutSeconds=5", headers=alice).get_json()["ready"] is False
    assert time.monotonic() - began < 2  # stopped: nothing to wait for
    client.post(url + "/launch", headers=alice)
    began = time.monotonic()
    assert client.get(url + "?wait=ready&timeoutSeconds=1", headers=alice).get_json()["ready"] is False
    assert 0.9 <= time.monotonic() - began < 5
    refused = client.get(url + "?wait=soon", headers=alice)
    assert refused.status_code == 400 and "wait" in refused.get_json()["details"]


@pytest.fixture
def narrow(tmp_path):
    """One request slot in all, and one wait per account."""
    with app_with(
        tmp_path / "data",
        server={"threads": 8, "max_in_flight": 1},
        readiness={"max_waits_per_account": 1, "max_waits": 2},
    ) as app:
        yield app


def test_waits_hold_no_request_slot_and_are_bounded_per_account_and_in_all(narrow):
    from cwhost.accounts import tokens as auth

    db = narrow.extensions["cwhost"].db
    alice, bob, carol = (bearer(auth.create_key(db, name).token) for name in ("alice", "bob", "carol"))
    client = narrow.test_client()
    urls = {}
    for name, headers in (("alice", alice), ("bob", bob), ("carol", carol)):
        ws = create_stopped(client, headers, name=name, cpuCores=1, memoryGB=1)
        narrow.extensions["cwhost"].driver.set_never_ready(domain_name(ws["id"]), True)
        urls[name] = f"/v1/workstations/{ws['id']}"
        assert client.post(urls[name] + "/launch", headers=headers).status_code == 200
    answers: dict[str, int] = {}

    def wait(name, headers):
        answers[name] = (
            narrow.test_client().get(urls[name] + "?wait=ready&timeoutSeconds=3", headers=headers).status_code
        )

    waits = [threading.Thread(target=wait, args=args) for args in (("alice", alice), ("bob", bob))]
    for thread in waits:
        thread.start()
    time.sleep(0.5)
    # The one request slot is free: both waits gave theirs back.
    assert client.get("/v1/workstations", headers=carol).status_code == 200
    # Alice has her one wait; the server its two.
    second = client.get(urls["alice"] + "?wait=ready&timeoutSeconds=3", headers=alice)
    assert second.status_code == 429 and "readiness.max_waits_per_account" in second.get_json()["message"]
    third = client.get(urls["carol"] + "?wait=ready&timeoutSeconds=3", headers=carol)
    assert third.status_code == 503 and third.headers["Retry-After"]
    for thread in waits:
        thread.join(10)
    assert answers == {"alice": 200, "bob": 200}
