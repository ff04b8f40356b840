"""Time from create to SSH ready for a `python` workstation, split into create, launch and boot.

Runs the real ``cwhost serve`` on the libvirt driver (qemu:///system, as
root) with an images directory holding a built `python` image (``cwhost
images build python``), and for each run: create (POST until `stopped`),
launch (the POST's answer), boot (from the launch's answer until an SSH
login with the account's key succeeds on the forwarded port, through
paramiko). Needs the test extra (paramiko, cryptography, requests).

    python benchmarks/create_to_ssh.py --images /var/tmp/cwhost-ci-images-KEY [--runs 3] [--domain-type qemu]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
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


def _serve(images: Path, domain_type: str, data_dir: Path) -> tuple[subprocess.Popen, str, dict]:
    port, ssh_port = _free_port(), _free_port()
    config = data_dir / "cwhost.toml"
    config.write_text(
        f'[driver]\nname = "libvirt"\n[driver.libvirt]\ndomain_type = "{domain_type}"\n'
        f'[images]\ndir = "{images}"\n[access]\npublic_host = "127.0.0.1"\nforward_listen = "127.0.0.1"\n'
        f"ssh_port_first = {ssh_port}\nssh_port_last = {ssh_port}\n"
    )
    env = {**os.environ, "CWHOST_CONFIG": str(config), "CWHOST_DATA_DIR": str(data_dir / "data")}
    command = [sys.executable, "-m", "cwhost", "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    return server, url, env


def _ssh_ready(port: int, key: paramiko.PKey, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect("127.0.0.1", port=port, username="dev", pkey=key, timeout=5, banner_timeout=10)
            return
        except (OSError, paramiko.SSHException):
            time.sleep(0.5)
        finally:
            client.close()
    raise SystemExit("the guest's SSH never answered")


def one_run(http: requests.Session, url: str, key: paramiko.PKey) -> tuple[float, float, float]:
    began = time.monotonic()
    body = {"name": "bench", "type": "python", "configuration": {"cpuCores": 2, "memoryGB": 2, "storageGB": 8}}
    created = http.post(url + "/v1/workstations", json=body).json()
    one = f"{url}/v1/workstations/{created['id']}"
    while http.get(one).json()["status"] != "stopped":
        time.sleep(0.05)
    provisioned = time.monotonic()
    launched = http.post(one + "/launch").json()
    started = time.monotonic()
    _ssh_ready(launched["access"]["ssh"]["port"], key)
    ready = time.monotonic()
    http.post(one + "/stop", params={"force": "true"})
    http.delete(one)
    return provisioned - began, started - provisioned, ready - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="an images directory with `python` built")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--domain-type", default="qemu", choices=["qemu", "kvm"])
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cwhost-bench-", dir="/var/tmp"))
    data_dir.chmod(0o751)
    server, url, env = _serve(args.images, args.domain_type, data_dir)
    try:
        token = subprocess.run(
            [sys.executable, "-m", "cwhost", "keys", "create", "--account", "bench"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.split()[-1]
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        key, public = _key()
        http.post(url + "/v1/account/ssh-keys", json={"name": "bench", "publicKey": public}).raise_for_status()
        runs = [one_run(http, url, key) for _ in range(args.runs)]
    finally:
        server.terminate()
        server.wait(timeout=60)
    for name, figures in zip(("create", "launch", "boot to SSH"), zip(*runs), strict=True):
        print(f"{name:>12}: median {statistics.median(figures):6.1f} s   runs: {' '.join(f'{f:.1f}' for f in figures)}")
    total = [sum(run) for run in runs]
    print(f"{'total':>12}: median {statistics.median(total):6.1f} s   ({args.domain_type}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
