"""The README's install-and-run and test commands, and the deploy steps of docs/operations.md, run as
written in a fresh Debian 12 root.

The root is made with ``mmdebstrap`` from Debian's packages: what a stock
Debian 12 server has (python3 without pip or venv, ca-certificates,
systemd), and nothing of this machine's own Python. The marked
blocks run in it through ``chroot`` in a private mount namespace. The
root is cached in /var/tmp, keyed by what makes it.

The machine's own network set-up (its certificates and pip configuration,
named by PIP_* and SSL_CERT_* variables) is passed into the root: that is how
this machine reaches the package registries, not part of the project.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import REPO, free_port

SUITE = "bookworm"
# A stock Debian 12 server: Python without pip or venv, certificates, systemd.
PACKAGES = ("python3", "ca-certificates", "systemd")
MMDEBSTRAP = ("mmdebstrap", "--mode=root", "--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE)
README = REPO / "README.md"

pytestmark = [
    pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="needs mmdebstrap (apt-get install mmdebstrap)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root"),
]


def readme_block(name: str) -> str:
    """The shell block the README or a page of docs/ marks ``<!-- fresh-debian: NAME -->``."""
    pattern = rf"<!-- fresh-debian: {re.escape(name)} -->\s*```sh\n(.*?)```"
    for page in (README, *sorted((REPO / "docs").glob("*.md"))):
        found = re.search(pattern, page.read_text(), re.S)
        if found:
            return found.group(1)
    raise AssertionError(f"neither the README nor docs/ has a block marked fresh-debian: {name}")


def _cached_root_tarball() -> Path:
    key = hashlib.sha256(" ".join(MMDEBSTRAP).encode()).hexdigest()[:16]
    tarball = Path(f"/var/tmp/cwhost-fresh-debian-{key}.tar")
    if not tarball.exists():
        # mmdebstrap chooses its output's format by the name's ending.
        partial = tarball.with_suffix(".partial.tar")
        subprocess.run([*MMDEBSTRAP, str(partial)], check=True, capture_output=True, timeout=900)
        partial.rename(tarball)
    return tarball


def _network_setup() -> tuple[list[str], dict[str, str]]:
    """Paths to bind into the root and variables to pass, so that apt and pip reach the registries."""
    binds = {"/etc/ssl/certs"}
    env = {}
    for name, value in os.environ.items():
        if name.startswith(("PIP_", "SSL_CERT_", "REQUESTS_CA_BUNDLE")):
            env[name] = value
            binds.update(part for part in value.split(os.pathsep) if part.startswith("/") and os.path.exists(part))
    for config in ("/etc/pip.conf", "/etc/xdg/pip"):
        if os.path.exists(config):
            binds.add(config)
    return sorted(binds), env


def _new_root() -> Path:
    """A fresh Debian 12 root with a copy of this checkout's tracked files in /root/cwhost."""
    tarball = _cached_root_tarball()
    root = Path(tempfile.mkdtemp(prefix="cwhost-fresh-root-", dir="/var/tmp"))
    subprocess.run(["tar", "-C", str(root), "-xf", str(tarball)], check=True, timeout=300)
    shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        target = root / "root" / "cwhost" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).exists():
            shutil.copy2(REPO / name, target)
    return root


@pytest.fixture(scope="module")
def fresh_root():
    root = _new_root()
    yield root
    shutil.rmtree(root, ignore_errors=True)


# The device nodes a script installing packages and starting daemons needs, and no more: not the
# host's /dev/kvm, whose group .ci/start-libvirtd would set to the root's own kvm group's number.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def _mounts(root: Path, installs: bool) -> list[str]:
    if not installs:
        return [f"mount -t proc proc {root}/proc", f"mount --rbind /dev {root}/dev"]
    mounts = [f"mount -t proc proc {root}/proc", f"mount -t sysfs sysfs {root}/sys", f"mount -t tmpfs dev {root}/dev"]
    for node in DEVICES:
        mounts += [f"touch {root}/dev/{node}", f"mount --bind /dev/{node} {root}/dev/{node}"]
    mounts += [f"mkdir -p {root}/dev/pts {root}/dev/shm", f"mount -t devpts -o newinstance devpts {root}/dev/pts"]
    links = [f"ln -s pts/ptmx {root}/dev/ptmx", f"ln -s /proc/self/fd {root}/dev/fd"]
    links += [f"ln -s /proc/self/fd/{n} {root}/dev/{name}" for n, name in enumerate(("stdin", "stdout", "stderr"))]
    return mounts + links + [f"mount -t tmpfs shm {root}/dev/shm"]


def in_root(root: Path, script: str, env: dict | None = None, installs: bool = False, **popen) -> subprocess.Popen:
    """Run ``script`` with bash -e as root inside ``root``, its working directory the copied checkout.

    ``installs``: the script installs packages and starts daemons. This machine's downloaded Debian
    packages serve the root's apt too (a large install fetches nothing again), sysfs is there for
    libvirtd, and /dev is the root's own, with only the common nodes of the host's in it.
    """
    binds, network_env = _network_setup()
    if installs:
        binds.append("/var/cache/apt/archives")
    mounts = _mounts(root, installs)
    for path in binds:
        inside = root / path.lstrip("/")
        if os.path.isdir(path):
            inside.mkdir(parents=True, exist_ok=True)
        else:
            inside.parent.mkdir(parents=True, exist_ok=True)
            inside.touch()
        mounts.append(f"mount --bind {shlex.quote(path)} {shlex.quote(str(inside))}")
    variables = {
        "HOME": "/root",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LANG": "C.UTF-8",
        **network_env,
        **(env or {}),
    }
    inner = "cd /root/cwhost\n" + script
    command = " && ".join(mounts) + " && exec chroot {} /usr/bin/env -i {} bash -ec {}".format(
        shlex.quote(str(root)),
        " ".join(shlex.quote(f"{k}={v}") for k, v in variables.items()),
        shlex.quote(inner),
    )
    return subprocess.Popen(["unshare", "--mount", "--fork", "bash", "-ec", command], **popen)


def run_in_root(root: Path, script: str, env: dict | None = None, timeout: float = 900, installs: bool = False) -> str:
    process = in_root(root, script, env, installs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-5000:]
    return output


def serve_in_root(root: Path, script: str, env: dict) -> tuple[subprocess.Popen, Path]:
    log = Path(tempfile.mkstemp(prefix="cwhost-fresh-serve-", dir="/var/tmp")[1])
    with open(log, "w") as out:
        process = in_root(root, script, env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return process, log


def wait_for_health(url: str, process: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-5000:]
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise AssertionError("no /healthz within the time:\n" + log.read_text()[-5000:])


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


def test_the_readme_quick_start_runs_on_stock_debian(fresh_root):
    port = free_port()
    process, log = serve_in_root(fresh_root, readme_block("quick-start"), {"CWHOST_PORT": str(port)})
    try:
        wait_for_health(f"http://127.0.0.1:{port}", process, log)
        assert (fresh_root / "root" / ".local" / "share" / "cwhost" / "cwhost.db").exists()
    finally:
        stop(process)
        log.unlink()


def _unit() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(REPO / "systemd" / "cwhost.service")
    return parser["Service"]


def _as_the_unit_would(unit: configparser.SectionProxy, port: int) -> str:
    """ExecStart run as systemd would: the state directory, the user, its environment and umask."""
    state = f"/var/lib/{unit['StateDirectory']}"
    variable, _, value = unit["Environment"].partition("=")
    return "\n".join(
        [
            f"install -d -m {unit['StateDirectoryMode']} -o {unit['User']} -g {unit['Group']} {state}",
            f"umask {unit['UMask']}",
            f"exec setpriv --reuid={unit['User']} --regid={unit['Group']} --init-groups"
            f" env {variable}={value} STATE_DIRECTORY={state} CWHOST_PORT={port} {unit['ExecStart']}",
        ]
    )


def test_the_readme_deploy_steps_give_a_token_the_service_accepts(fresh_root):
    output = run_in_root(fresh_root, readme_block("deploy-install"))
    verified = run_in_root(fresh_root, "systemd-analyze verify --man=no /etc/systemd/system/cwhost.service 2>&1")
    assert "cwhost.service" not in verified, verified
    unit = _unit()
    port = free_port()
    process, log = serve_in_root(fresh_root, _as_the_unit_would(unit, port), {})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, process, log)
        output = run_in_root(fresh_root, readme_block("deploy-token"))
        assert "cwhost: database /var/lib/cwhost/cwhost.db" in output, output
        token = output.strip().splitlines()[-1]
        answer = requests.get(url + "/v1/account", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["name"] == "admin"
        state = fresh_root / "var" / "lib" / "cwhost"
        owners = {path.name: path.stat().st_uid for path in state.iterdir() if path.name.startswith("cwhost.db")}
        assert owners and set(owners.values()) == {state.stat().st_uid} != {0}, owners
    finally:
        stop(process)
        log.unlink()


def _stop_daemons_in(root: Path) -> None:
    """End what a script left running inside ``root`` (the libvirtd and virtlogd .ci/run starts)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "root") == str(root):
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            pass  # gone already, or not ours to read


def _host_kvm_group() -> int | None:
    return os.stat("/dev/kvm").st_gid if os.path.exists("/dev/kvm") else None


def test_the_readme_test_command_runs_on_stock_debian():
    """The README's test command, as written, on stock Debian: it installs what it needs, starts its
    daemons, builds the test guest, checks the code, and runs pytest (here on a few modules: the
    whole suite, real VMs and this test included, is what CI runs it for)."""
    root = _new_root()
    kvm_group = _host_kvm_group()
    try:
        command = readme_block("test").strip()
        output = run_in_root(
            root, f"{command} tests/test_config.py tests/test_cloud_init.py", timeout=2400, installs=True
        )
        assert re.search(r"Contracts: \d+ kept, 0 broken\.", output) and "All checks passed!" in output, output[-5000:]
        assert re.search(r"\n=+ \d+ passed in ", output), output[-5000:]
    finally:
        _stop_daemons_in(root)
        shutil.rmtree(root, ignore_errors=True)
    assert _host_kvm_group() == kvm_group, "the host's /dev/kvm changed group"

