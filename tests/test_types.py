"""Workstation types: defaults, overrides, unknown and broken types, and the check command."""

from __future__ import annotations

import pytest

from cwhost.app import create_app
from cwhost.db.database import Database
from tests.helpers import bearer, cli, make_config, wait_for_status

SEED_TYPES = {"python", "nodejs", "golang", "chromium", "zoom-chromium", "meet-chromium", "voip", "voip-chromium", "max"}

# The display every workstation has unless its configuration names another.
XGA = {"width": 1024, "height": 768}


def test_the_seeds_types_are_offered_by_default(client, alice):
    listed = client.get("/v1/workstation-types", headers=alice).get_json()
    assert listed["object"] == "list" and not listed["hasMore"]
    assert {t["id"] for t in listed["data"]} == SEED_TYPES
    python = next(t for t in listed["data"] if t["id"] == "python")
    assert python["configuration"]["cpuCores"] > 0
    # Not built on this server; the fake driver boots no image, so the type is usable all the same.
    assert python["imagePresent"] is False and python["image"] is None
    assert python["missingFiles"][0].endswith("/images/python/current/disk.qcow2")
    assert {"python3", "python3-venv", "git"} <= set(python["packages"])
    zoom = next(t for t in listed["data"] if t["id"] == "zoom-chromium")
    assert {"speaker", "microphone", "display"} <= set(zoom["hardware"])
    assert {"desktop", "chromium", "ssh"} <= set(zoom["software"])
    assert python["idleTimeoutMinutes"] == 120


def test_a_type_fills_what_the_request_leaves_out(client, alice):
    created = client.post("/v1/workstations", json={"name": "py", "type": "python"}, headers=alice)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["type"] == "python"
    assert body["configuration"] == {
        "cpuCores": 4, "memoryGB": 8, "storageGB": 64, "gpu": None, "region": "us-west-2", "display": XGA
    }
    assert body["idleTimeoutMinutes"] == 120


def test_what_the_request_gives_overrides_the_type(client, alice):
    created = client.post(
        "/v1/workstations",
        json={
            "name": "py",
            "type": "python",
            "configuration": {"cpuCores": 2, "gpu": "NVIDIA L40S"},
            "idleTimeoutMinutes": 0,
        },
        headers=alice,
    ).get_json()
    assert created["configuration"]["cpuCores"] == 2 and created["configuration"]["memoryGB"] == 8
    assert created["configuration"]["gpu"] == "NVIDIA L40S"
    assert created["idleTimeoutMinutes"] == 0
    listed = client.get("/v1/workstations?type=python", headers=alice).get_json()["data"]
    assert [w["id"] for w in listed] == [created["id"]]


def test_without_a_type_the_configuration_is_required(client, alice, components):
    response = client.post("/v1/workstations", json={"name": "x", "configuration": {"cpuCores": 2}}, headers=alice)
    assert response.status_code == 400
    assert set(response.get_json()["details"]["configuration"]) == {"memoryGB", "storageGB"}
    assert components.db.query("SELECT id FROM workstations") == []


def _app_with_types(tmp_path, types):
    config = make_config(tmp_path / "data", types=types)
    Database(config.database_path).migrate()
    return create_app(config)


def test_a_type_whose_image_is_missing_is_422_naming_the_file(tmp_path):
    image = tmp_path / "images" / "lab.qcow2"
    app = _app_with_types(
        tmp_path, {"lab": {"cpu_cores": 1, "memory_gb": 1, "storage_gb": 5, "image": str(image)}}
    )
    client = app.test_client()
    from cwhost.accounts import tokens as auth

    alice = bearer(auth.create_key(app.extensions["cwhost"].db, "alice").token)
    listed = client.get("/v1/workstation-types", headers=alice).get_json()["data"]
    assert listed == [
        {
            "id": "lab",
            "description": "",
            "configuration": {
                "cpuCores": 1, "memoryGB": 1, "storageGB": 5, "gpu": None, "region": "us-west-2", "display": XGA
            },
            "idleTimeoutMinutes": 0,
            "runningTimeoutMinutes": 0,
            "packages": [],
            "hardware": ["keyboard", "mouse", "display"],
            "software": ["ssh", "terminal", "vnc"],
            "capabilities": ["screenshot", "input"],
            "imagePresent": False,
            "missingFiles": [str(image)],
            "image": None,
        }
    ]
    refused = client.post("/v1/workstations", json={"name": "l", "type": "lab"}, headers=alice)
    assert (refused.status_code, refused.get_json()["error"]) == (422, "unknown_asset")
    assert str(image) in refused.get_json()["message"]
    image.parent.mkdir()
    image.write_bytes(b"qcow")
    created = client.post("/v1/workstations", json={"name": "l", "type": "lab"}, headers=alice)
    assert created.status_code == 201
    wait_for_status(client, alice, created.get_json()["id"], "stopped")
    domain = "cwhost-" + created.get_json()["id"]
    assert app.extensions["cwhost"].driver.describe(domain).boot.image == str(image)
    app.extensions["cwhost"].services.background.wait_idle()


def test_types_check_names_what_is_broken(tmp_path):
    good = tmp_path / "vmlinuz"
    good.write_bytes(b"k")
    server_config = f"""
[types.ok]
cpu_cores = 1
memory_gb = 1
storage_gb = 1
kernel = "{good}"
[types.broken]
cpu_cores = 1
memory_gb = 1
storage_gb = 1
image = "{tmp_path}/missing.qcow2"
"""
    config_file = tmp_path / "types.toml"
    config_file.write_text(server_config)
    import os

    env = {**os.environ, "CWHOST_DATA_DIR": str(tmp_path / "data")}
    result = cli(env, "--config", str(config_file), "types", "check")
    assert result.returncode == 1
    assert "ok: ready" in result.stdout
    assert f"broken: missing {tmp_path}/missing.qcow2" in result.stdout
    config_file.write_text(server_config.replace(f'image = "{tmp_path}/missing.qcow2"', f'kernel = "{good}"'))
    assert cli(env, "--config", str(config_file), "types", "check").returncode == 0


def test_a_type_sets_the_auto_stop_defaults(tmp_path):
    app = _app_with_types(
        tmp_path,
        {"short": {"cpu_cores": 1, "memory_gb": 1, "storage_gb": 1, "running_timeout_minutes": 30}},
    )
    from cwhost.accounts import tokens as auth

    client = app.test_client()
    alice = bearer(auth.create_key(app.extensions["cwhost"].db, "alice").token)
    created = client.post("/v1/workstations", json={"name": "s", "type": "short"}, headers=alice).get_json()
    assert created["runningTimeoutMinutes"] == 30 and created["idleTimeoutMinutes"] == 0
    app.extensions["cwhost"].services.background.wait_idle()


@pytest.mark.parametrize("bad", [{"cpu_cores": 0, "memory_gb": 1, "storage_gb": 1}, {"memory_gb": 1, "storage_gb": 1}])
def test_a_badly_configured_type_stops_start_up(tmp_path, bad):
    from cwhost.config.server import ConfigError

    with pytest.raises(ConfigError, match="types.bad"):
        make_config(tmp_path, types={"bad": bad})
