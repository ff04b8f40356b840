"""Commands and screenshots of a running workstation through the API, on the fake driver (simulated:
no command ever runs on the host). tests/test_real_vm_image.py runs them in a real guest."""

from __future__ import annotations

import io

from PIL import Image

from tests.helpers import create_stopped, wait_until


def _running(client, alice):
    workstation = create_stopped(client, alice, cpuCores=1, memoryGB=1)
    client.post(f"/v1/workstations/{workstation['id']}/launch", headers=alice)
    return f"/v1/workstations/{workstation['id']}"


def test_a_command_runs_in_the_guest_and_is_logged_without_its_output(client, alice):
    url = _running(client, alice)
    answer = client.post(url + "/exec", json={"command": ["echo", "hello", "there"]}, headers=alice)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["exitCode"] == 0 and body["stdout"] == "hello there\n" and body["stdoutEncoding"] == "utf-8"
    assert body["truncated"] is False and body["timedOut"] is False and body["durationMs"] >= 0
    fed = client.post(url + "/exec", json={"command": ["cat"], "stdin": "secret input"}, headers=alice).get_json()
    assert fed["stdout"] == "secret input"
    messages = [entry["message"] for entry in client.get(url + "/logs", headers=alice).get_json()["data"]]
    assert "Ran echo hello there: exit code 0." in messages
    assert not any("secret input" in message for message in messages)
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


def test_the_fake_guest_never_runs_a_command_on_the_host(client, alice, tmp_path):
    url = _running(client, alice)
    marker = tmp_path / "ran-on-the-host"
    body = client.post(url + "/exec", json={"command": ["touch", str(marker)]}, headers=alice).get_json()
    assert body["exitCode"] == 127 and "command not found" in body["stderr"]
    assert not marker.exists()
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


def test_a_command_past_its_timeout_is_killed_and_says_so(client, alice):
    url = _running(client, alice)
    body = client.post(url + "/exec", json={"command": ["sleep", "60"], "timeoutSeconds": 0.2}, headers=alice)
    assert body.get_json()["timedOut"] is True and body.get_json()["exitCode"] == 137
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


def test_exec_and_screenshot_need_a_running_workstation_of_ones_own(client, alice, bob):
    workstation = create_stopped(client, alice, cpuCores=1, memoryGB=1)
    url = f"/v1/workstations/{workstation['id']}"
    stopped = client.post(url + "/exec", json={"command": ["true"]}, headers=alice)
    assert (stopped.status_code, stopped.get_json()["error"]) == (400, "invalid_state")
    assert client.get(url + "/screenshot", headers=alice).status_code == 400
    client.post(url + "/launch", headers=alice)
    assert client.post(url + "/exec", json={"command": ["true"]}, headers=bob).status_code == 404
    assert client.get(url + "/screenshot", headers=bob).status_code == 404
    for bad in (
        {"command": []},
        {"command": [""]},
        {"command": ["a\x00b"]},
        {"command": ["x"], "timeoutSeconds": 0},
        {"command": ["x"], "env": {"1BAD": "x"}},
        {"command": "echo hi"},
    ):
        refused = client.post(url + "/exec", json=bad, headers=alice)
        assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_request"), bad
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


def test_a_screenshot_is_a_png_of_the_display(client, alice):
    url = _running(client, alice)
    answer = client.get(url + "/screenshot", headers=alice)
    assert answer.status_code == 200 and answer.content_type == "image/png"
    image = Image.open(io.BytesIO(answer.data))
    assert image.size == (1024, 768) and len(image.convert("RGB").getcolors(1 << 16) or ()) > 1
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


def test_input_is_checked_whole_then_sent(client, alice, bob):
    url = _running(client, alice)
    actions = [
        {"type": "move", "x": 100, "y": 200},
        {"type": "click", "button": "left"},
        {"type": "text", "text": "hello"},
        {"type": "key", "keys": ["ctrl", "a"]},
        {"type": "scroll", "dy": 3},
    ]
    answer = client.post(url + "/input", json={"actions": actions}, headers=alice)
    assert answer.status_code == 200 and answer.get_json() == {"sent": 5}
    for bad, named in (
        ({"type": "key", "keys": ["hyper"]}, "no key 'hyper'"),
        ({"type": "move", "x": 5000, "y": 1}, "outside the screen"),
        ({"type": "move", "x": 1}, "y"),
        ({"type": "teleport"}, "type"),
    ):
        refused = client.post(url + "/input", json={"actions": [{"type": "text", "text": "ok"}, bad]}, headers=alice)
        assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_request"), bad
        assert named in str(refused.get_json()), refused.get_json()
    assert client.post(url + "/input", json={"actions": actions}, headers=bob).status_code == 404
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


def test_a_call_its_type_does_not_offer_is_422_naming_the_capability(tmp_path):
    from cwhost.accounts import tokens as auth
    from cwhost.app import create_app
    from cwhost.db.database import Database
    from tests.helpers import bearer, make_config, power_off_fake_guests, wait_for_status

    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    config = make_config(
        tmp_path / "data", types={"lab": {"cpu_cores": 1, "memory_gb": 1, "storage_gb": 1, "kernel": str(kernel)}}
    )
    Database(config.database_path).migrate()
    app = create_app(config)
    client = app.test_client()
    alice = bearer(auth.create_key(app.extensions["cwhost"].db, "alice").token)
    try:
        created = client.post("/v1/workstations", json={"name": "lab", "type": "lab"}, headers=alice).get_json()
        wait_for_status(client, alice, created["id"], "stopped")
        url = f"/v1/workstations/{created['id']}"
        client.post(url + "/launch", headers=alice)
        refused = client.post(url + "/exec", json={"command": ["true"]}, headers=alice)
        assert (refused.status_code, refused.get_json()["error"]) == (422, "unknown_asset")
        assert "'exec'" in refused.get_json()["message"]
        assert client.get(url + "/screenshot", headers=alice).status_code == 200
        client.post(url + "/stop", headers=alice, query_string={"force": "true"})
    finally:
        app.extensions["cwhost"].services.background.wait_idle()
        power_off_fake_guests(config.data_dir)


def test_a_sleep_the_guest_cannot_read_fails_as_sleep_would_not_500(client, alice):
    url = _running(client, alice)
    for interval in ("nan", "-1", "abc"):
        answer = client.post(url + "/exec", json={"command": ["sleep", interval]}, headers=alice)
        assert answer.status_code == 200, (interval, answer.get_json())
        assert answer.get_json()["exitCode"] == 1 and "invalid time interval" in answer.get_json()["stderr"]
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


def test_a_commands_log_line_is_one_bounded_line(client, alice):
    url = _running(client, alice)
    forged = "x\nRan rm -rf /: exit code 0."
    assert (
        client.post(url + "/exec", json={"command": ["echo", forged, "'" * 100_000]}, headers=alice).status_code == 200
    )
    messages = [entry["message"] for entry in client.get(url + "/logs", headers=alice).get_json()["data"]]
    ran = [m for m in messages if m.startswith("Ran echo")]
    assert len(ran) == 1 and "\n" not in ran[0] and "\\x0a" in ran[0] and len(ran[0]) < 260, ran
    assert not any(m.startswith("Ran rm") for m in messages)
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


def test_input_beyond_ten_seconds_of_events_is_refused_whole_at_once(client, alice):
    url = _running(client, alice)
    flood = [{"type": "text", "text": "a" * 10_000}] * 104
    refused = client.post(url + "/input", json={"actions": flood}, headers=alice)
    assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_request")
    assert "more than 1000 input events" in refused.get_json()["message"]
    # 500 characters (1000 events, a press and a release each) are the most one request types.
    fits = client.post(url + "/input", json={"actions": [{"type": "text", "text": "a" * 500}]}, headers=alice)
    assert fits.status_code == 200
    over = client.post(url + "/input", json={"actions": [{"type": "text", "text": "a" * 501}]}, headers=alice)
    assert over.status_code == 400
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


def test_one_accounts_long_commands_take_its_own_slots_not_everyones(client, alice, bob):
    import threading

    url, bobs = _running(client, alice), _running(client, bob)
    answers = []

    def sleep_in_the_guest():
        answers.append(client.post(url + "/exec", json={"command": ["sleep", "3"]}, headers=alice).status_code)

    sleepers = [threading.Thread(target=sleep_in_the_guest) for _ in range(2)]
    for sleeper in sleepers:
        sleeper.start()

    # Both of alice's slots (exec.max_per_account = 2) are taken while they sleep.
    def refused():
        third = client.post(url + "/exec", json={"command": ["true"]}, headers=alice)
        return third if third.status_code == 429 else None

    third = wait_until(refused, 2, "alice's third command refused", every=0.1)
    assert third.get_json()["error"] == "rate_limited"
    assert int(third.headers["Retry-After"]) > 0 and "exec.max_per_account" in third.get_json()["message"]
    # bob is not held up by them.
    assert client.post(bobs + "/exec", json={"command": ["true"]}, headers=bob).get_json()["exitCode"] == 0
    for sleeper in sleepers:
        sleeper.join()
    assert answers == [200, 200]
    assert client.post(url + "/exec", json={"command": ["true"]}, headers=alice).status_code == 200
    for each, who in ((url, alice), (bobs, bob)):
        client.post(each + "/stop", headers=who, query_string={"force": "true"})
