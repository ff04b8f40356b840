"""SSH from the LAN: each running workstation holds a host port of the configured range, alone."""

from __future__ import annotations

import socket

import pytest

from cwhost.app import create_app
from cwhost.db.database import Database
from tests.helpers import ONE_GPU_HOST, bearer, create_stopped, free_port, make_config, power_off_fake_guests


@pytest.fixture
def ported(tmp_path):
    """A server whose SSH range is three free ports; the fake driver records forwards, opens none."""
    first = free_port()
    while not all(_free(p) for p in range(first, first + 3)):
        first = free_port()
    config = make_config(
        tmp_path / "data",
        access={"public_host": "gpu-server.lan", "ssh_port_first": first, "ssh_port_last": first + 2},
        driver={"name": "fake", "stop_timeout_seconds": 0.5, "fake": ONE_GPU_HOST},
    )
    Database(config.database_path).migrate()
    app = create_app(config)
    from cwhost.accounts import tokens as auth

    yield app, bearer(auth.create_key(app.extensions["cwhost"].db, "alice").token), range(first, first + 3)
    app.extensions["cwhost"].services.background.wait_idle()
    power_off_fake_guests(config.data_dir)


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _launch(client, alice, workstation_id):
    answer = client.post(f"/v1/workstations/{workstation_id}/launch", headers=alice)
    return answer.status_code, answer.get_json()


def test_each_running_workstation_gets_its_own_port_freed_at_stop(ported):
    app, alice, ports = ported
    client = app.test_client()
    ids = [create_stopped(client, alice, name=f"w{i}", cpuCores=1, memoryGB=1)["id"] for i in range(4)]
    held = {}
    for workstation_id in ids[:3]:
        status, body = _launch(client, alice, workstation_id)
        assert status == 200, body
        ssh = body["access"]["ssh"]
        assert ssh["host"] == "gpu-server.lan" and ssh["user"] == "dev"
        assert ssh["command"] == f"ssh -p {ssh['port']} dev@gpu-server.lan"
        held[workstation_id] = ssh["port"]
    assert sorted(held.values()) == list(ports)
    # The driver was told to forward exactly that port to the guest's 22.
    driver = app.extensions["cwhost"].driver
    forwards = driver.access("cwhost-" + ids[0]).forwards
    assert [(f.host_port, f.guest_port) for f in forwards] == [(held[ids[0]], 22)]

    status, body = _launch(client, alice, ids[3])
    assert (status, body["error"]) == (503, "unavailable") and "No host port is free" in body["message"]
    assert client.get(f"/v1/workstations/{ids[3]}", headers=alice).get_json()["status"] == "stopped"

    stopped = client.post(f"/v1/workstations/{ids[1]}/stop", headers=alice).get_json()
    assert stopped["access"] is None
    status, body = _launch(client, alice, ids[3])
    assert status == 200 and body["access"]["ssh"]["port"] == held[ids[1]]
    for workstation_id in (ids[0], ids[2], ids[3]):
        client.post(f"/v1/workstations/{workstation_id}/stop", headers=alice, query_string={"force": "true"})


def test_a_port_something_else_listens_on_is_skipped(ported):
    app, alice, ports = ported
    client = app.test_client()
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", ports[0]))
        squatter.listen()
        workstation_id = create_stopped(client, alice, cpuCores=1, memoryGB=1)["id"]
        status, body = _launch(client, alice, workstation_id)
    assert status == 200 and body["access"]["ssh"]["port"] == ports[1]
    client.post(f"/v1/workstations/{workstation_id}/stop", headers=alice, query_string={"force": "true"})


def test_ports_held_survive_a_restart_of_the_service(ported, tmp_path):
    app, alice, ports = ported
    client = app.test_client()
    first = create_stopped(client, alice, name="a", cpuCores=1, memoryGB=1)["id"]
    assert _launch(client, alice, first)[1]["access"]["ssh"]["port"] == ports[0]
    app.extensions["cwhost"].services.background.wait_idle()

    restarted = create_app(app.extensions["cwhost"].config)
    again = restarted.test_client()
    shown = again.get(f"/v1/workstations/{first}", headers=alice).get_json()
    assert shown["access"]["ssh"]["port"] == ports[0]
    second = create_stopped(again, alice, name="b", cpuCores=1, memoryGB=1)["id"]
    assert _launch(again, alice, second)[1]["access"]["ssh"]["port"] == ports[1]
    for workstation_id in (first, second):
        again.post(f"/v1/workstations/{workstation_id}/stop", headers=alice, query_string={"force": "true"})
    restarted.extensions["cwhost"].services.background.wait_idle()


def test_the_port_range_is_checked(tmp_path):
    from cwhost.config.server import ConfigError

    with pytest.raises(ConfigError, match="ssh_port_first must not be above"):
        make_config(tmp_path, access={"ssh_port_first": 23000, "ssh_port_last": 22000})
    with pytest.raises(ConfigError, match="access.ssh_port_first"):
        make_config(tmp_path, access={"ssh_port_first": 80})


def test_a_browser_type_gets_a_cdp_url_and_only_ssh_is_forwarded(tmp_path):
    first = free_port()
    config = make_config(
        tmp_path / "data",
        access={"public_host": "gpu-server.lan", "ssh_port_first": first, "ssh_port_last": first + 20},
        browser={"port": free_port()},
        driver={"name": "fake", "stop_timeout_seconds": 0.5, "fake": ONE_GPU_HOST},
    )
    Database(config.database_path).migrate()
    app = create_app(config)
    from cwhost.accounts import tokens as auth

    alice = bearer(auth.create_key(app.extensions["cwhost"].db, "alice").token)
    client = app.test_client()
    try:
        shown = {}
        for type_id in ("chromium", "python"):
            created = client.post("/v1/workstations", json={"name": type_id, "type": type_id}, headers=alice)
            workstation_id = created.get_json()["id"]
            from tests.helpers import wait_for_status

            wait_for_status(client, alice, workstation_id, "stopped")
            shown[type_id] = client.post(f"/v1/workstations/{workstation_id}/launch", headers=alice).get_json()
        browser = shown["chromium"]["access"]["browser"]
        assert browser["cdpUrl"].startswith(f"ws://gpu-server.lan:{config.browser.port}/cdp/")
        assert shown["python"]["access"]["browser"] is None
        forwards = app.extensions["cwhost"].driver.access("cwhost-" + shown["chromium"]["id"]).forwards
        # DevTools are reached over the guest's private network (driver.guest_endpoint), never a host port.
        assert [(f.guest_port, f.listen) for f in forwards] == [(22, "0.0.0.0")]
        types = {t["id"]: t for t in client.get("/v1/workstation-types", headers=alice).get_json()["data"]}
        assert "cdp" in types["chromium"]["capabilities"] and "cdp" not in types["python"]["capabilities"]
        for ws in shown.values():
            client.post(f"/v1/workstations/{ws['id']}/stop", headers=alice, query_string={"force": "true"})
    finally:
        app.extensions["cwhost"].services.background.wait_idle()
        power_off_fake_guests(config.data_dir)


@pytest.mark.parametrize("public_host", ["", "ws.example.lan"])
def test_ssh_console_and_cdp_name_the_server_by_one_rule(tmp_path, public_host):
    first = free_port()
    console, browser = free_port(), free_port()
    config = make_config(
        tmp_path / "data",
        access={"public_host": public_host, "ssh_port_first": first, "ssh_port_last": first + 5},
        console={"port": console},
        browser={"port": browser},
        driver={"name": "fake", "stop_timeout_seconds": 0.5, "fake": ONE_GPU_HOST},
    )
    Database(config.database_path).migrate()
    app = create_app(config)
    from cwhost.accounts import tokens as auth

    alice = bearer(auth.create_key(app.extensions["cwhost"].db, "alice").token)
    client = app.test_client()
    sent_to = {"Host": "gpu-server.lan:8080"}
    try:
        from tests.helpers import wait_for_status

        created = client.post("/v1/workstations", json={"name": "w", "type": "chromium"}, headers=alice)
        wait_for_status(client, alice, created.get_json()["id"], "stopped")
        url = f"/v1/workstations/{created.get_json()['id']}"
        client.post(url + "/launch", headers=alice)
        access = client.get(url, headers={**alice, **sent_to}).get_json()["access"]
        name = public_host or "gpu-server.lan"
        assert access["ssh"]["host"] == name and access["ssh"]["command"].endswith(f"dev@{name}")
        assert access["console"]["url"].startswith(f"http://{name}:8080/console/")
        assert access["console"]["websocketUrl"].startswith(f"ws://{name}:{console}/?token=")
        assert access["browser"]["cdpUrl"].startswith(f"ws://{name}:{browser}/cdp/")
        # Another request, another Host: the same record's JSON names that one (unless configured).
        again = client.get(url, headers={**alice, "Host": "10.1.2.3"}).get_json()["access"]
        assert again["ssh"]["host"] == (public_host or "10.1.2.3")
        client.post(url + "/stop", headers=alice, query_string={"force": "true"})
    finally:
        app.extensions["cwhost"].services.background.wait_idle()
        power_off_fake_guests(config.data_dir)
