"""A real ``cwhost serve`` on the libvirt driver for the launch benchmarks, and what they ask of it."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _key() -> tuple[paramiko.PKey, str]:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem)), public.decode()


def ssh_login(port: int, key: paramiko.PKey, known_hosts: str) -> None:
    """One login with the published host key and no other (RejectPolicy), as a careful client makes it."""
    entry = paramiko.hostkeys.HostKeyEntry.from_line(known_hosts)
    client = paramiko.SSHClient()
    client.get_host_keys().add(entry.hostnames[0], entry.key.get_name(), entry.key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect("127.0.0.1", port=port, username="dev", pkey=key, timeout=10, banner_timeout=30)
    finally:
        client.close()


class Server:
    """cwhost serve with the given images (type, images dir), and untyped workstations booting ``kernel``
    with ``initrd`` (the floor); an account with an SSH key."""

    def __init__(self, data_dir: Path, images: list[tuple[str, Path]], kernel: Path, initrd: Path):
        self._data_dir = data_dir
        combined = data_dir / "images"
        combined.mkdir()
        for type_id, directory in images:
            (combined / type_id).symlink_to(directory / type_id)
        port, first_ssh = _free_port(), 22000 + os.getpid() % 1000
        config = data_dir / "cwhost.toml"
        config.write_text(
            f'[driver]\nname = "libvirt"\n[driver.libvirt]\ndomain_type = "qemu"\nkernel = "{kernel}"\n'
            f'initrd = "{initrd}"\ncmdline = "console=ttyS0"\n[images]\ndir = "{combined}"\n'
            f'[access]\npublic_host = "127.0.0.1"\nforward_listen = "127.0.0.1"\n'
            f"ssh_port_first = {first_ssh}\nssh_port_last = {first_ssh + 9}\n"
        )  # readiness read as shipped: each read of a guest's report is work in that guest, timed too
        self.env = {**os.environ, "CWHOST_CONFIG": str(config), "CWHOST_DATA_DIR": str(data_dir / "data")}
        self.url = f"http://127.0.0.1:{port}"
        self._command = [sys.executable, "-m", "cwhost", "serve", "--port", str(port)]
        self.http = requests.Session()
        self.key, self._public = _key()

    def __enter__(self) -> Server:
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self._process = subprocess.Popen(self._command, env=self.env, **quiet)
        for _ in range(300):
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        token = subprocess.run(
            [sys.executable, "-m", "cwhost", "keys", "create", "--account", "bench"],
            env=self.env, capture_output=True, text=True, check=True,
        ).stdout.split()[-1]  # fmt: skip
        self.http.headers["Authorization"] = f"Bearer {token}"
        key = {"name": "bench", "publicKey": self._public}
        self.http.post(self.url + "/v1/account/ssh-keys", json=key).raise_for_status()
        return self

    def __exit__(self, *exc_info) -> None:
        self._process.terminate()
        self._process.wait(timeout=60)

    def created(self, body: dict) -> str:
        """A new workstation, once provisioned: its URL."""
        created = self.http.post(self.url + "/v1/workstations", json=body)
        if created.status_code != 201:
            raise SystemExit(f"create {body}: {created.status_code} {created.text}")
        one = f"{self.url}/v1/workstations/{created.json()['id']}"
        while self.http.get(one).json()["status"] != "stopped":
            time.sleep(0.05)
        return one

    def ready(self, one: str) -> dict:
        """The workstation once ready, waited for by the server a minute at a time."""
        while True:
            shown = self.http.get(one, params={"wait": "ready", "timeoutSeconds": 60}, timeout=90).json()
            if shown["ready"]:
                return shown
            if shown["status"] != "running" or shown["statusMessage"]:
                raise SystemExit(f"never ready: {shown}")

    def exec(self, one: str, *command: str) -> str:
        answer = self.http.post(one + "/exec", json={"command": list(command), "timeoutSeconds": 60}).json()
        return answer["stdout"]
