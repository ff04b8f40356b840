"""What tests share besides fixtures: configurations, a served cwhost, waits, and HTTP shorthands."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from cwhost.config.server import build_config
from drivers.base import DomainState, HostInfo
from drivers.fake.driver import FakeDriver

# The logs of the servers the running test started: a failure shows their
# ends, since a 503's message says what failed but the log says why.
started_server_logs: list[Path] = []

REPO = Path(__file__).resolve().parent.parent


ONE_GPU_HOST = {
    "cpu_cores": 16,
    "memory_gb": 64,
    "storage_gb": 1000,
    "gpus": [
        {"model": "NVIDIA RTX A5000", "pci_address": "0000:65:00.0"},
        {"model": "NVIDIA L40S", "pci_address": "0000:ca:00.0"},
    ],
}


def make_config(data_dir: Path, **overrides):
    raw = {
        "data_dir": str(data_dir),
        # Room for the concurrency tests; the shedding tests set their own bound.
        "server": {"threads": 64, "max_in_flight": 60},
        "regions": ["us-west-2", "eu-central-1"],
        "driver": {"name": "fake", "stop_timeout_seconds": 0.5, "fake": ONE_GPU_HOST},
    }
    raw.update(overrides)
    return build_config(raw)


def power_off_fake_guests(data_dir: Path) -> None:
    """Fake guests outlive the service, as VMs do; a test must not leave them behind."""
    driver = FakeDriver(data_dir / "fake-driver", HostInfo(1, 1, 1, ()))
    for name, state in driver.list_domains().items():
        if state == DomainState.RUNNING:
            driver.destroy(name)


@contextmanager
def app_with(data_dir: Path, **overrides):
    """An application on the fake driver with these settings changed, its guests powered off after."""
    from cwhost.app import create_app
    from cwhost.db.database import Database

    config = make_config(data_dir, **overrides)
    Database(config.database_path).migrate()
    app = create_app(config)
    yield app
    app.extensions["cwhost"].services.background.wait_idle()
    power_off_fake_guests(config.data_dir)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


GOOD_CONFIGURATION = {"cpuCores": 4, "memoryGB": 8, "storageGB": 20, "region": "us-west-2"}


def create_stopped(client, headers, name="ws1", **configuration):
    """Create a workstation and wait until it is provisioned."""
    body = {"name": name, "configuration": {**GOOD_CONFIGURATION, **configuration}}
    created = client.post("/v1/workstations", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    return wait_for_status(client, headers, created.get_json()["id"], "stopped")


def wait_for_status(client, headers, workstation_id, status, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/v1/workstations/{workstation_id}", headers=headers).get_json()
        if body["status"] == status or time.monotonic() > deadline:
            assert body["status"] == status, body
            return body
        time.sleep(0.02)


def wait_over_http(session, url: str, status: str, timeout: float = 10.0) -> dict:
    """Poll a workstation's URL on a real server until it shows ``status``; its body then."""
    deadline = time.monotonic() + timeout
    while True:
        body = session.get(url).json()
        if body["status"] == status or time.monotonic() > deadline:
            assert body["status"] == status, body
            return body
        time.sleep(0.05)


class StandInServer:
    """A TCP server on loopback for a stand-in of something cwhost talks to: ``answer`` each connection."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self.answer, args=(connection,), daemon=True).start()

    def answer(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def close(self):
        self.socket.close()
        for connection in self.connections:
            connection.close()


def wait_until(predicate, timeout: float, what: str, every: float = 0.5):
    """``predicate()``'s first true value, asked every ``every`` seconds; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    process: subprocess.Popen
    url: str
    env: dict
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """The server's log once it holds ``text``: what a background thread logs comes when it comes."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            assert time.monotonic() < deadline, f"{text!r} not logged within {timeout}s:\n{log}"
            time.sleep(0.05)
        return log

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=20)


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cwhost", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_server(tmp_path: Path, config_text: str = "", extra_env=None, umask: int = -1) -> RunningServer:
    """Run the real ``cwhost serve`` on a free port and wait until it answers."""
    port = free_port()
    config_file = tmp_path / "cwhost.toml"
    config_file.write_text(config_text)
    env = {
        **os.environ,
        "CWHOST_CONFIG": str(config_file),
        "CWHOST_DATA_DIR": str(tmp_path / "server-data"),
        **(extra_env or {}),
    }
    log_path = tmp_path / f"server-{port}.log"
    started_server_logs.append(log_path)
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "cwhost", "serve", "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            umask=umask,
        )
    server = RunningServer(process, f"http://127.0.0.1:{port}", env, log_path)
    if not wait_until_serving(server.url, process):
        process.kill()
        raise AssertionError("server did not start:\n" + server.log())
    return server


def wait_until_serving(url: str, process: subprocess.Popen, timeout: float = 30) -> bool:
    """True once ``url``/healthz answers 200; False if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return True
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    return False
