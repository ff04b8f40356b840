"""The real ``cwhost serve`` process over real HTTP, and the command line around it."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import requests

from cwhost.accounts import tokens as auth
from tests.helpers import (
    GOOD_CONFIGURATION,
    cli,
    free_port,
    power_off_fake_guests,
    start_server,
    wait_over_http,
    wait_until_serving,
)


def _token(server, account="alice", *flags):
    result = cli(server.env, "keys", "create", "--account", account, *flags)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_life_cycle_over_http(server):
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {_token(server)}"
    base = server.url + "/v1/workstations"

    created = http.post(base, json={"name": "life", "configuration": {**GOOD_CONFIGURATION, "region": "local"}})
    assert created.status_code == 201, created.text
    ws = created.json()
    assert ws["status"] == "provisioning"
    url = server.url + created.headers["Location"]
    wait_over_http(http, url, "stopped")

    assert http.post(url + "/launch").json()["status"] == "running"
    refused = http.patch(url, json={"configuration": {"cpuCores": 2}})
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_state")
    assert http.post(url + "/stop").json()["status"] == "stopped"
    patched = http.patch(url, json={"configuration": {"cpuCores": 2, "storageGB": 30}})
    assert patched.status_code == 200
    assert patched.json()["configuration"]["cpuCores"] == 2
    assert http.post(url + "/launch").json()["status"] == "running"
    assert http.post(url + "/stop", params={"force": "true"}).json()["status"] == "stopped"
    usage = http.get(url + "/usage")
    assert usage.status_code == 200 and "cpuHours" in usage.json()
    assert http.delete(url).status_code == 204
    gone = http.get(url)
    assert (gone.status_code, gone.json()["error"]) == (404, "not_found")


def test_state_survives_a_restart_of_the_service(tmp_path):
    first = start_server(tmp_path)
    token = _token(first)
    headers = {"Authorization": f"Bearer {token}"}
    created = requests.post(
        first.url + "/v1/workstations",
        json={"name": "keep", "configuration": {**GOOD_CONFIGURATION, "region": "local"}},
        headers=headers,
    ).json()
    url = f"/v1/workstations/{created['id']}"
    session = requests.Session()
    session.headers.update(headers)
    wait_over_http(session, first.url + url, "stopped")
    requests.post(first.url + url + "/launch", headers=headers)
    assert first.stop() == 0
    assert "cwhost stopped" in first.log()

    second = start_server(tmp_path)
    try:
        again = requests.get(second.url + url, headers=headers).json()
        assert again["status"] == "running"
        assert again["startedAt"] is not None
    finally:
        second.stop()
        power_off_fake_guests(tmp_path / "server-data")


def test_body_of_10_megabytes_is_a_json_413_through_the_real_server(server):
    response = requests.post(
        server.url + "/v1/workstations",
        data=b'{"name": "' + b"x" * (10 * 1024 * 1024) + b'"}',
        headers={"Authorization": f"Bearer {_token(server)}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert requests.get(server.url + "/healthz").status_code == 200


def test_first_start_at_a_terminal_prints_one_admin_token(tmp_path):
    env = {**os.environ, "CWHOST_DATA_DIR": str(tmp_path / "data"), "CWHOST_CONFIG": ""}
    port = free_port()
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cwhost", "serve", "--port", str(port)],
        env=env,
        stdout=follower,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    os.close(follower)
    try:
        output = b""
        deadline = time.monotonic() + 30
        while b"CWHOST_TOKEN=" not in output or not output.endswith(b"\n"):
            assert time.monotonic() < deadline, output
            if select.select([leader], [], [], 0.5)[0]:
                output += os.read(leader, 4096)
        token = re.search(rb"CWHOST_TOKEN=(\S+)", output).group(1).decode()
        url = f"http://127.0.0.1:{port}"
        assert wait_until_serving(url, process)
        response = requests.get(url + "/v1/host", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        listed = cli(env, "keys", "list")
        assert token not in listed.stdout
        assert len([line for line in listed.stdout.splitlines() if " admin " in line]) == 1
    finally:
        process.terminate()
        process.wait(timeout=20)
        os.close(leader)


def test_first_start_without_a_terminal_creates_no_token_and_says_how(server):
    assert "cwhost keys create --account admin --admin" in server.log()
    assert "cwh_" not in server.log()
    listed = cli(server.env, "keys", "list")
    assert listed.stdout.strip().splitlines()[1:] == []


def test_keys_create_list_revoke(server):
    created = cli(server.env, "keys", "create", "--account", "team-a")
    token = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"cwh_[A-Za-z0-9_-]{43}", token)
    key_id = re.search(r"key (key-\w+)", created.stdout).group(1)
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(server.url + "/v1/workstations", headers=headers).status_code == 200

    listed = cli(server.env, "keys", "list")
    assert key_id in listed.stdout and "team-a" in listed.stdout and token not in listed.stdout

    assert requests.get(server.url + "/v1/workstations", headers=headers).status_code == 200
    assert cli(server.env, "keys", "revoke", key_id).returncode == 0
    revoked_at = time.monotonic()
    while requests.get(server.url + "/v1/workstations", headers=headers).status_code != 401:
        assert time.monotonic() - revoked_at < auth.VERIFIED_TOKEN_SECONDS + 0.5
        time.sleep(0.05)
    again = cli(server.env, "keys", "revoke", key_id)
    assert again.returncode == 1 and "no active key" in again.stderr
    assert token not in server.log()


def test_a_bad_configuration_stops_start_up_with_a_clear_message(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[server]\nport = "eighty"\n[driver]\nname = "vmware"\n')
    result = cli({**os.environ, "CWHOST_DATA_DIR": str(tmp_path)}, "serve", "--config", str(config))
    assert result.returncode == 2
    assert "server.port" in result.stderr and "driver.name" in result.stderr
    assert "Traceback" not in result.stderr
