"""The contract as a client generator and a fuzzer see it, against the live server.

- schemathesis, every check on (``--checks all``): every answer documented,
  schema-valid requests accepted, schema-violating ones refused.
- openapi-python-client generates a Python client from the served document,
  and that generated code alone drives a workstation's whole life.
"""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import cli, power_off_fake_guests, start_server

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "tests" / "contract" / "schemathesis.toml"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    # The fuzzer sends thousands of requests a minute; the rate limit is not what is tested here.
    server = start_server(root, "[server]\nrate_limit_per_minute = 1000000\n")
    token = cli(server.env, "keys", "create", "--account", "contract", "--admin").stdout.split()[-1]
    yield server, token, root
    server.stop()
    power_off_fake_guests(root / "server-data")


@pytest.fixture(scope="module")
def client_token(live):
    """A token of an account of its own: the fuzzer, with its admin token, sets balances at random."""
    server, _token, _root = live
    return cli(server.env, "keys", "create", "--account", "generated-client").stdout.split()[-1]


def test_schemathesis_with_every_check_finds_nothing(live):
    server, token, _root = live
    result = subprocess.run(
        [
            str(BIN / "st"),
            "--config-file",
            str(CONFIG),
            "run",
            server.url + "/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "50",
            "--seed",
            "1",
            "-H",
            f"Authorization: Bearer {token}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.contract.hooks", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failure" not in result.stdout.split("SUMMARY")[-1]


@pytest.fixture(scope="module")
def generated(live, client_token, tmp_path_factory):
    server, _admin_token, _root = live
    out = tmp_path_factory.mktemp("client")
    (out / "openapi.json").write_bytes(requests.get(server.url + "/openapi.json").content)
    # No formatting hooks: the generated code is used as it comes.
    # The screenshot is PNG, a recording WebM, the speaker WAV, a stream text/event-stream:
    # openapi-python-client reads a body it does not know as bytes only when told.
    as_bytes = ("image/png", "video/webm", "audio/wav", "text/event-stream")
    overrides = "".join(f"  {kind}: application/octet-stream\n" for kind in as_bytes)
    (out / "config.yaml").write_text(
        "post_hooks: []\npackage_name_override: cwhost_client\n" + "content_type_overrides:\n" + overrides
    )
    result = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            "openapi.json",
            "--config",
            "config.yaml",
            "--meta",
            "none",
        ],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(out))
    try:
        client_module = importlib.import_module("cwhost_client")
        with client_module.AuthenticatedClient(base_url=server.url, token=client_token) as client:
            yield client_module, client
    finally:
        sys.path.remove(str(out))


def _wait(get_workstation, client, workstation_id, status):
    deadline = time.monotonic() + 10
    while (found := get_workstation.sync(workstation_id, client=client)).status.value != status:
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    return found


def test_a_generated_client_drives_a_whole_life(generated):
    _package, client = generated
    api = "cwhost_client.api."
    create_workspace = importlib.import_module(api + "workspaces.create_workspace")
    upload = importlib.import_module(api + "workspaces.upload_workspace_file")
    download = importlib.import_module(api + "workspaces.download_workspace_file")
    create = importlib.import_module(api + "workstations.create_workstation")
    get_workstation = importlib.import_module(api + "workstations.get_workstation")
    launch = importlib.import_module(api + "workstations.launch_workstation")
    usage = importlib.import_module(api + "workstations.get_workstation_usage")
    stop = importlib.import_module(api + "workstations.stop_workstation")
    update = importlib.import_module(api + "workstations.update_workstation")
    delete = importlib.import_module(api + "workstations.delete_workstation")
    models = importlib.import_module("cwhost_client.models")
    types = importlib.import_module("cwhost_client.types")

    workspace = create_workspace.sync(client=client, body=models.WorkspaceCreate(name="thesis"))
    configuration = models.ConfigurationIn(cpu_cores=2, memory_gb=4, storage_gb=10)
    created = create.sync(
        client=client,
        body=models.WorkstationCreate(name="generated", configuration=configuration, workspace_id=workspace.id),
    )
    assert isinstance(created, models.Workstation), created
    _wait(get_workstation, client, created.id, "stopped")
    assert launch.sync(created.id, client=client).status.value == "running"
    assert usage.sync(created.id, client=client).cpu_hours >= 0
    stopped = stop.sync(created.id, client=client, force=True)
    assert stopped.status.value == "stopped"
    patched = update.sync(
        created.id, client=client, body=models.WorkstationPatch(configuration=models.ConfigurationIn(cpu_cores=3))
    )
    assert patched.configuration.cpu_cores == 3

    stored = upload.sync(workspace.id, "notes/day1.txt", client=client, body=types.File(payload=io.BytesIO(b"day one")))
    assert isinstance(stored, models.WorkspaceFile) and stored.name == "notes/day1.txt", stored
    fetched = download.sync_detailed(workspace.id, stored.id, client=client)
    assert fetched.status_code == 200 and fetched.content == b"day one"

    assert delete.sync_detailed(created.id, client=client).status_code == 204
    assert get_workstation.sync_detailed(created.id, client=client).status_code == 404
