"""A workstation people can work in, end to end: the `python` image built by `cwhost images build`,
booted under TCG by the real server, reached over SSH through its forwarded port.

The image is built once per package list and guest files, and kept in
/var/tmp (about 70 s to build here; the boot to sshd takes about 2 minutes
under TCG). Everything else happens through cwhost's HTTP API and paramiko,
on loopback.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from cwhost.images import guest_files
from cwhost.images.packages import SEED_PACKAGES
from drivers.libvirt.network import GuestNetwork
from tests import real_vm_agents, real_vm_audio
from tests.helpers import cli, free_port, start_server, wait_until
from tests.test_deployment_files import unit_service_section

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
paramiko = pytest.importorskip("paramiko", reason="paramiko is not installed")
pytestmark = [
    pytest.mark.skipif(not os.environ.get("CWHOST_REAL_VM_GUEST"), reason="no libvirtd for real VMs (see .ci/run)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="building an image needs root"),
]
BOOT_SECONDS = 420
# The host's address on cwhost's own guest network (the default subnet).
GATEWAY = str(GuestNetwork().gateway)


IMAGES_SOURCE = Path(guest_files.__file__).parent
# The page the chromium image's desktop opens: large dark text on white, easy to tell from a blank screen.
# (No '#' in it: in a data: URL that starts the fragment.)
START_PAGE = "data:text/html,<body style='background:white'><h1 style='font-size:120px'>cwhost</h1></body>"
TYPES = {
    "python": {"packages": list(SEED_PACKAGES["python"]), "start_url": ""},
    "chromium": {"packages": list(SEED_PACKAGES["chromium"]), "start_url": START_PAGE},
    "voip": {"packages": list(SEED_PACKAGES["voip"]), "start_url": ""},
}


def _types_toml() -> str:
    """The types as a server declares them: small enough for this machine, with their packages."""
    tables = []
    for type_id, declared in TYPES.items():
        packages = ", ".join(json.dumps(p) for p in declared["packages"])
        tables.append(
            f"[types.{type_id}]\ncpu_cores = 2\nmemory_gb = 2\nstorage_gb = 8\n"
            f"packages = [{packages}]\nstart_url = {json.dumps(declared['start_url'])}\n"
        )
    return "\n".join(tables)


def _cached_image(type_id: str) -> Path:
    """A directory of images holding ``type_id``'s, built once for everything that goes into it."""
    sources = {path.name: path.read_text() for path in sorted(IMAGES_SOURCE.glob("*.py"))}
    # The guest service goes into every image.
    sources.update(sorted(guest_files.GUEST_SERVICE_FILES.items()))
    inputs = {"type": TYPES[type_id], "sources": sources}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    images = Path(f"/var/tmp/cwhost-ci-images-{type_id}-{key}")
    config = images.with_suffix(".toml")
    config.write_text(f'[images]\ndir = "{images}"\n\n{_types_toml()}')
    env = {**os.environ, "CWHOST_CONFIG": str(config), "CWHOST_DATA_DIR": tempfile.mkdtemp(prefix="cwhost-img-")}
    if f"{type_id}: ready" not in cli(env, "types", "check").stdout:
        built = subprocess.run(
            [sys.executable, "-m", "cwhost", "images", "build", type_id], env=env, capture_output=True, text=True
        )
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        assert f"{type_id}: [4/4] writing the manifest" in built.stdout
        # Builds for inputs that no longer are (1-2 GB each) go: the cache keeps one per type.
        for stale in images.parent.glob(f"cwhost-ci-images-{type_id}-*"):
            if stale.name not in (images.name, config.name):
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return images


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    """The types' images, each from its own cache, side by side as one server's images directory."""
    combined = tmp_path_factory.mktemp("images")
    for type_id in TYPES:
        (combined / type_id).symlink_to(_cached_image(type_id) / type_id)
    return combined


@pytest.fixture
def server(images_dir, tmp_path):
    service = unit_service_section()
    data_dir = Path(tempfile.mkdtemp(prefix="cwhost-realvm-", dir="/var/tmp"))
    data_dir.chmod(int(service["StateDirectoryMode"], 8))
    first = free_port()
    config = f"""
[driver]
name = "libvirt"
stop_timeout_seconds = 90
[driver.libvirt]
uri = "qemu:///system"
domain_type = "qemu"
network = ""
[images]
dir = "{images_dir}"
[browser]
port = {free_port()}
listen = "127.0.0.1"
[console]
port = {free_port()}
listen = "127.0.0.1"
[access]
public_host = "127.0.0.1"
# Every address, as by default: guests reach each other's SSH forwards too, and keys decide.
forward_listen = "0.0.0.0"
ssh_port_first = {first}
ssh_port_last = {first + 5}
{_types_toml()}
"""
    server = start_server(tmp_path, config, extra_env={"CWHOST_DATA_DIR": str(data_dir)}, umask=0o027)
    yield server, data_dir
    if server.process.poll() is None:
        server.stop()
    # Its disks and consoles are gone with the workstations it deleted; what a failure left goes too,
    # its running VMs first (they would slow every test after it).
    _remove_domains_of(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


def _remove_domains_of(data_dir: Path) -> None:
    conn = libvirt.open("qemu:///system")
    try:
        for domain in conn.listAllDomains():
            if str(data_dir) in domain.XMLDesc(0):
                if domain.isActive():
                    domain.destroy()
                domain.undefine()
    finally:
        conn.close()


def _ssh(port: int, key, known_hosts: str) -> paramiko.SSHClient:
    """Logged in with ``key``, to the guest whose host key the API published and no other."""
    published = paramiko.hostkeys.HostKeyEntry.from_line(known_hosts)
    assert published is not None and published.hostnames == [f"[127.0.0.1]:{port}"], known_hosts
    client = paramiko.SSHClient()
    # From the host's bridge address, not its loopback: QEMU shows the guest a LAN client's own
    # address (loopback it shows as 10.0.2.2), and the guest must answer it back through QEMU.
    # The same forward, so the same key: StrictHostKeyChecking=yes, no first answer trusted.
    client.get_host_keys().add(f"[{GATEWAY}]:{port}", published.key.get_name(), published.key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(GATEWAY, port=port, username="dev", pkey=key, timeout=10, banner_timeout=30, auth_timeout=30)
    return client


def _ready(http: requests.Session, url: str) -> dict:
    """The workstation once its guest says it is ready: waits the server holds, a minute at a time."""
    deadline = time.monotonic() + BOOT_SECONDS
    while True:
        shown = http.get(url, params={"wait": "ready", "timeoutSeconds": 60}, timeout=90).json()
        if shown["ready"] or shown["status"] != "running" or shown["statusMessage"]:
            break
        assert time.monotonic() < deadline, f"not ready within {BOOT_SECONDS} s: {shown}"
    assert shown["ready"], shown
    return shown


def _run(client: paramiko.SSHClient, command: str) -> str:
    _, stdout, stderr = client.exec_command(command, timeout=60)
    status = stdout.channel.recv_exit_status()
    out = stdout.read().decode()
    assert status == 0, f"{command}: exit {status}: {out} {stderr.read().decode()}"
    return out


def _new_key():
    """A key pair: paramiko's private key, its public line, and the private key as OpenSSH's file holds it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem)), public.decode() + " ci@test", pem


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_python_workstation_from_create_to_ssh_and_back(server, tmp_path):
    server, data_dir = server
    http = requests.Session()
    http.headers["Authorization"] = "Bearer " + cli(server.env, "keys", "create", "--account", "ci").stdout.split()[-1]
    key, public_key, _ = _new_key()
    assert http.post(server.url + "/v1/account/ssh-keys", json={"name": "ci", "publicKey": public_key}).ok
    workspace = http.post(server.url + "/v1/workspaces", json={"name": "code"}).json()["id"]
    files = f"{server.url}/v1/workspaces/{workspace}/files"
    assert http.put(files + "/from-api.txt", data=b"uploaded through the API\n").status_code == 201

    began = time.monotonic()
    created = http.post(
        server.url + "/v1/workstations", json={"name": "py", "type": "python", "workspaceId": workspace}
    )
    assert created.status_code == 201, created.text
    url = f"{server.url}/v1/workstations/{created.json()['id']}"
    domain = f"cwhost-{created.json()['id']}"
    wait_until(lambda: http.get(url).json()["status"] == "stopped", 120, "provisioning")
    provisioned = time.monotonic()
    launched = http.post(url + "/launch")
    assert launched.status_code == 200, launched.text
    # The guest is still booting: its agent does not answer yet.
    early = http.post(url + "/exec", json={"command": ["true"]})
    assert early.status_code == 503 and int(early.headers["Retry-After"]) > 0, early.text
    assert launched.json()["ready"] is False
    ssh = launched.json()["access"]["ssh"]
    assert ssh["user"] == "dev" and ssh["command"] == f"ssh -p {ssh['port']} dev@127.0.0.1"
    assert ssh["hostKeyFingerprint"].startswith("SHA256:")
    started = time.monotonic()
    shown = _ready(http, url)
    ready = time.monotonic()
    print(
        f"\ncreate {provisioned - began:.1f} s, launch {started - provisioned:.1f} s,"
        f" boot to ready {ready - started:.1f} s (TCG)"
    )
    assert shown["access"]["ssh"]["knownHosts"] == ssh["knownHosts"]
    guest = _ssh(ssh["port"], key, ssh["knownHosts"])
    try:
        # Ready means the first-boot work is done and the workspace mounted: at the first login.
        assert _run(guest, "systemctl is-active cwhost-seed.service").strip() == "active"
        assert _run(guest, "locale | head -n 1").strip() == "LANG=C.UTF-8"
        assert _run(guest, "findmnt -n -o FSTYPE ~/workspace").strip() == "virtiofs"
        assert _run(guest, "python3 -c 'print(6*7)'").strip() == "42"
        assert _run(guest, "sudo -n true 2>&1") == "", "sudo cannot resolve the hostname"
        # systemd-networkd took DHCP on the guest network, and resolved asks the DNS server it gave.
        assert f"nameserver {GATEWAY}" in _run(guest, "cat /run/systemd/resolve/resolv.conf")
        assert _run(guest, "readlink /etc/resolv.conf").strip() == "../run/systemd/resolve/stub-resolv.conf"
        # The workspace, both ways, in a home of the user's own.
        assert _run(guest, "stat -c %U ~ ~/workspace").split() == ["dev", "dev"]
        assert _run(guest, "cat ~/workspace/from-api.txt") == "uploaded through the API\n"
        _run(guest, "echo written in the guest > ~/workspace/from-guest.txt && sync")
        listed = {f["name"]: f for f in http.get(files).json()["data"]}
        assert "from-guest.txt" in listed
        assert http.get(server.url + listed["from-guest.txt"]["url"]).text == "written in the guest\n"
        _run(guest, "echo kept > ~/kept.txt && sync")
    finally:
        guest.close()
    addresses = wait_until(lambda: http.get(url).json()["access"]["ipAddresses"], 120, "the agent's addresses")
    assert any("." in address for address in addresses)
    _commands_and_screen_through_the_agent(http, url)
    real_vm_agents.processes_stream_take_stdin_and_die(http, url)
    real_vm_agents.files_both_ways_and_a_watch(http, url)
    real_vm_agents.a_terminal_runs_a_program_and_survives_a_reconnect(http, url)
    real_vm_agents.a_recording_of_the_screen_while_typing(http, url, tmp_path)
    _console_in_a_browser(http, url)

    # A graceful stop is the guest powering itself off (ACPI), not the plug pulled.
    stopped = http.post(url + "/stop")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    messages = [entry["message"] for entry in http.get(url + "/logs").json()["data"]]
    assert any("The guest powered off when asked." in m for m in messages), messages
    console = (data_dir / "consoles" / f"{domain}.log").read_text(errors="replace")
    assert "reboot: Power down" in console
    assert _refused(ssh["port"])

    # What was written in ~ is still there after a new launch, behind the same host key.
    relaunched = http.post(url + "/launch").json()
    again = _ready(http, url)["access"]["ssh"]
    assert again["hostKeyFingerprint"] == ssh["hostKeyFingerprint"]
    messages = [entry["message"] for entry in http.get(url + "/logs").json()["data"]]
    assert sum(m.startswith("Ready ") for m in messages) == 2, messages
    guest = _ssh(relaunched["access"]["ssh"]["port"], key, again["knownHosts"])
    try:
        assert _run(guest, "cat ~/kept.txt") == "kept\n"
    finally:
        guest.close()
    assert http.post(url + "/stop").json()["status"] == "stopped"

    # Delete leaves no domain, disk, seed or forwarded port behind.
    assert http.delete(url).status_code == 204
    conn = libvirt.open("qemu:///system")
    try:
        assert domain not in [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()
    assert not list((data_dir / "disks").glob(f"{domain}*"))
    assert _refused(ssh["port"])


def _headless_chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _console_in_a_browser(http: requests.Session, url: str) -> None:
    """The one-time console link, opened by headless Chromium: noVNC connects and shows the VM's screen."""
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    console = http.get(url).json()["access"]["console"]
    assert console["host"] == "127.0.0.1" and console["websocketUrl"].startswith("ws://127.0.0.1:")
    browser = _headless_chromium()
    try:
        browser.get(console["url"])
        status = browser.find_element(By.ID, "status")
        WebDriverWait(browser, 60).until(lambda _: status.text in ("Connected", "Connection failed"))
        assert status.text == "Connected", browser.get_log("browser") if hasattr(browser, "get_log") else ""
        canvas = browser.find_element(By.CSS_SELECTOR, "#screen canvas")

        def screen_drawn():
            image = Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB")
            return image if len(image.getcolors(1 << 24) or ()) > 1 else None

        image = wait_until(screen_drawn, 60, "the VM's screen drawn on the canvas")
        assert image.width > 100 and image.height > 100
        _console_in_the_dashboard(browser, http, url)
    finally:
        browser.quit()
    again = requests.get(console["url"])
    assert again.status_code == 404 and again.json()["error"] == "not_found"


def _console_in_the_dashboard(browser, http: requests.Session, url: str) -> None:
    """The same console embedded in the dashboard's workstation page: signed in with the token, noVNC connects."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, workstation_id = url.split("/v1/")[0], url.rsplit("/", 1)[1]
    browser.get(base + "/ui/login")
    browser.find_element(By.ID, "token").send_keys(http.headers["Authorization"].split()[1])
    browser.find_element(By.CSS_SELECTOR, "form.card button[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "workstation-rows"))
    browser.get(f"{base}/ui/workstations/{workstation_id}")
    browser.switch_to.frame(browser.find_element(By.ID, "console"))
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 60).until(lambda _: status.text in ("Connected", "Connection failed"))
    assert status.text == "Connected"
    browser.switch_to.default_content()


def _commands_and_screen_through_the_agent(http: requests.Session, url: str) -> None:
    """What a program does with no SSH: run commands through the guest agent, take the screen."""
    from PIL import Image

    ran = http.post(url + "/exec", json={"command": ["python3", "-c", "print(6*7)"]}).json()
    assert (ran["exitCode"], ran["stdout"], ran["timedOut"]) == (0, "42\n", False), ran
    assert http.post(url + "/exec", json={"command": ["id", "-un"]}).json()["stdout"] == "dev\n"
    began = time.monotonic()
    slept = http.post(url + "/exec", json={"command": ["sleep", "60"], "timeoutSeconds": 2}).json()
    assert slept["timedOut"] is True and slept["exitCode"] == 137
    assert time.monotonic() - began < 10
    flood = http.post(url + "/exec", json={"command": ["python3", "-c", "print('a' * 2000000)"]}).json()
    assert flood["truncated"] is True and len(flood["stdout"]) == 1024 * 1024
    shot = http.get(url + "/screenshot")
    assert shot.status_code == 200 and shot.headers["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(shot.content)).convert("RGB")
    assert image.width >= 640 and len(image.getcolors(1 << 24) or ()) > 1
    _typing_and_pointing(http, url, image)


TABLET_READER = """
import glob, os, select, struct, time
name = next(p for p in glob.glob('/sys/class/input/event*') if 'Tablet' in open(p + '/device/name').read())
device = os.open('/dev/input/' + os.path.basename(name), os.O_RDONLY | os.O_NONBLOCK)
open('/run/cwhost-tablet-reader', 'w').close()  # listening: the test moves the pointer only now
seen, end = {}, time.time() + 40
while time.time() < end and not (0 in seen and 1 in seen):
    if select.select([device], [], [], 0.2)[0]:
        data = os.read(device, 24 * 64)
        for at in range(0, len(data), 24):
            kind, code, value = struct.unpack('llHHi', data[at:at + 24])[2:]
            if kind == 3:
                seen[code] = value
print(seen.get(0), seen.get(1))
"""


def _typing_and_pointing(http: requests.Session, url: str, before) -> None:
    """Text typed through the input API appears on the screen; the pointer lands where it was sent."""

    from PIL import Image, ImageChops

    def screen():
        return Image.open(io.BytesIO(http.get(url + "/screenshot").content)).convert("RGB")

    typed = http.post(url + "/input", json={"actions": [{"type": "text", "text": "cwhost typed this"}]})
    assert typed.status_code == 200 and typed.json() == {"sent": 1}
    wait_until(lambda: ImageChops.difference(screen(), before).getbbox(), 30, "the typed text on the screen")
    # The guest's USB tablet reports the absolute position, scaled from the screenshot's pixels.
    read = {}
    reader = threading.Thread(
        target=lambda: read.update(
            http.post(
                url + "/exec", json={"command": ["sudo", "python3", "-c", TABLET_READER], "timeoutSeconds": 60}
            ).json()
        )
    )
    reader.start()
    # Moved once the reader listens (a pointer event is sent once; an unchanged position sends none).
    listening = ("test", "-e", "/run/cwhost-tablet-reader")
    wait_until(lambda: _exec(http, url, *listening).get("exitCode") == 0, 50, "the tablet reader listening")
    width, height = before.size
    moved = http.post(url + "/input", json={"actions": [{"type": "move", "x": 100, "y": 200}]})
    assert moved.status_code == 200
    reader.join(timeout=70)
    assert read.get("exitCode") == 0, read
    assert read["stdout"].split() == [str(round(100 * 32767 / (width - 1))), str(round(200 * 32767 / (height - 1)))]


def _exec(http: requests.Session, url: str, *command: str, stdin: str = "") -> dict:
    return http.post(url + "/exec", json={"command": list(command), "stdin": stdin, "timeoutSeconds": 30}).json()


def _account(server, name: str) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = "Bearer " + cli(server.env, "keys", "create", "--account", name).stdout.split()[-1]
    return http


def _launched(http: requests.Session, server, body: dict) -> str:
    created = http.post(server.url + "/v1/workstations", json=body)
    assert created.status_code == 201, created.text
    url = f"{server.url}/v1/workstations/{created.json()['id']}"
    wait_until(lambda: http.get(url).json()["status"] == "stopped", 120, "provisioning")
    assert http.post(url + "/launch").status_code == 200
    _ready(http, url)
    return url


def test_a_voip_workstation_is_heard_saying_what_it_says(server):
    """A voip workstation's speaker: what espeak-ng says in the guest is heard by cwhost, as WAV and
    as words (tests/real_vm_audio.py)."""
    server, _data_dir = server
    http = _account(server, "carol")
    url = _launched(http, server, {"name": "phone", "type": "voip", "configuration": {"cpuCores": 1}})
    real_vm_audio.what_the_guest_says_is_heard(http, url)
    assert http.post(url + "/stop", params={"force": "true"}).status_code == 200
    assert http.delete(url).status_code == 204


def test_two_tenants_browser_and_python_each_walled_off_from_the_other(server):
    """bob's chromium workstation shows its browser full-screen; alice's python workstation, running
    beside it, reaches none of bob's doors (DevTools, VNC, SSH) but bob's public SSH forward, which
    refuses her key and takes his. (Driving the browser over CDP is the next test's, on both cores.)"""
    server, _data_dir = server
    bob, alice = _account(server, "bob"), _account(server, "alice")
    keys = {}
    for name, http in (("alice", alice), ("bob", bob)):
        _, public, keys[name] = _new_key()
        assert http.post(server.url + "/v1/account/ssh-keys", json={"name": name, "publicKey": public}).ok
    # One core each: this host has two, and each type asks for both.
    # A display other than XGA: the guest's X takes the one mode its video device offers, Chromium fills it.
    wide = {"cpuCores": 1, "display": {"width": 1280, "height": 800}}
    url = _launched(bob, server, {"name": "web", "type": "chromium", "configuration": wide})
    alice_url = _launched(alice, server, {"name": "py", "type": "python", "configuration": {"cpuCores": 1}})
    _the_browser_full_screen(bob, url, (1280, 800))
    _walled_off(server, alice, alice_url, keys, bob, url)
    for http, each in ((bob, url), (alice, alice_url)):
        assert http.post(each + "/stop", params={"force": "true"}).status_code == 200
        assert http.delete(each).status_code == 204


def test_a_browser_is_driven_over_cdp_through_the_proxy_to_a_page_on_the_hosts_bridge(server):
    """A CDP client, with the owner's token, drives a chromium workstation (both of this host's cores,
    as the type asks) through the CDP proxy and the guest network to a page the host serves."""
    server, _data_dir = server
    bob = _account(server, "bob")
    url = _launched(bob, server, {"name": "web", "type": "chromium"})
    _the_browser_full_screen(bob, url, (1024, 768))
    _an_agents_loop(bob, url)
    assert bob.post(url + "/stop", params={"force": "true"}).status_code == 200
    assert bob.delete(url).status_code == 204


def _the_browser_full_screen(http: requests.Session, url: str, size: tuple[int, int]) -> None:
    """The chromium image: its X session shows Chromium full-screen at the configured size, its DevTools on
    the guest's loopback only."""
    from PIL import Image

    # Ready: Chromium runs and its DevTools answer.
    assert _exec(http, url, "pgrep", "-u", "desktop", "-x", "chromium")["exitCode"] == 0
    # The seed's user (uid 1000) and the desktop's own (a system user) both exist.
    assert _exec(http, url, "id", "-u")["stdout"] == "1000\n"
    listening = _exec(http, url, "ss", "-Hltn", "sport = :9222")["stdout"].split()
    assert "127.0.0.1:9222" in listening and "0.0.0.0:9222" not in listening
    request = "GET /json/version HTTP/1.1\\r\\nHost: 127.0.0.1:9222\\r\\nConnection: close\\r\\n\\r\\n"
    version = _exec(http, url, "bash", "-c", f'exec 3<>/dev/tcp/127.0.0.1/9222; printf "{request}" >&3; cat <&3')
    assert '"Browser": "Chrome/' in version["stdout"], version
    # The browser found its program in memory, read beside Xorg's start (cwhost-browser-read): its
    # processes waited on the disk for a few hundred pages (440 here), not the 2,900 of a program
    # faulted in as it runs.
    majflt = 'for p in $(pgrep -u desktop -x chromium); do cut -d" " -f12 "/proc/$p/stat"; done'
    faults = _exec(http, url, "sh", "-c", majflt)
    assert sum(map(int, faults["stdout"].split())) < 1500, faults

    def page_shown():
        image = Image.open(io.BytesIO(http.get(url + "/screenshot").content)).convert("L")
        # Full screen: the page's white reaches every corner (within the window's 1-pixel edge);
        # the heading puts dark pixels on it.
        corners = [image.getpixel((x, y)) for x in (2, image.width - 3) for y in (2, image.height - 3)]
        return image.size == size and all(c > 200 for c in corners) and image.getextrema()[0] < 60

    wait_until(page_shown, 180, "the start page full-screen")


SCAN = """
import concurrent.futures, json, socket, sys
def probe(target):
    try:
        socket.create_connection(tuple(target), timeout=3).close()
        return target
    except OSError:
        return None
with concurrent.futures.ThreadPoolExecutor(64) as pool:
    print(json.dumps([t for t in pool.map(probe, json.loads(sys.stdin.read())) if t]))
"""


def _guest_address(http: requests.Session, url: str) -> str:
    subnet = GuestNetwork().subnet

    def found():
        addresses = http.get(url).json()["access"]["ipAddresses"]
        return next((a for a in addresses if "." in a and ipaddress.ip_address(a) in subnet), None)

    return wait_until(found, 180, "the guest's address on cwhost's network")


def _walled_off(server, alice: requests.Session, alice_url: str, keys: dict, bob: requests.Session, url: str):
    """From inside alice's guest: of every host and guest door, only the two public SSH forwards open, and
    bob's refuses her key (and takes his, which shows the door works from a guest); from bob's guest,
    alice's SSH is not reachable directly either."""
    bob_ws, alice_ws = bob.get(url).json(), alice.get(alice_url).json()
    assert alice.get(url).status_code == 404
    bob_ip, alice_ip = _guest_address(bob, url), _guest_address(alice, alice_url)
    forwards = {bob_ws["access"]["ssh"]["port"], alice_ws["access"]["ssh"]["port"]}
    first = min(forwards)
    host_ports = {
        urlsplit(server.url).port,
        urlsplit(bob_ws["access"]["console"]["websocketUrl"]).port,
        urlsplit(bob_ws["access"]["browser"]["cdpUrl"]).port,
        bob_ws["access"]["console"]["port"],
        *range(5900, 5906),
        *range(first - 5, first + 6),
        22,
        9222,
        9223,
    }
    targets = [[host, port] for host in (GATEWAY, "10.0.2.2", "10.0.2.3") for port in sorted(host_ports)]
    targets += [[bob_ip, port] for port in (22, 5900, 9222, 9223)]
    scan = alice.post(
        alice_url + "/exec",
        json={"command": ["python3", "-c", SCAN], "stdin": json.dumps(targets), "timeoutSeconds": 60},
    ).json()
    assert scan["exitCode"] == 0, scan
    assert sorted(map(tuple, json.loads(scan["stdout"]))) == sorted((GATEWAY, port) for port in forwards)

    for name in ("alice", "bob"):
        put_key = f"install -m 700 -d ~/.ssh && cat > ~/.ssh/{name} && chmod 600 ~/.ssh/{name}"
        assert _exec(alice, alice_url, "sh", "-c", put_key, stdin=keys[name])["exitCode"] == 0
    # Bob's published host key, for the address alice reaches his forward at: nothing else is trusted.
    bob_port = bob_ws["access"]["ssh"]["port"]
    known = bob_ws["access"]["ssh"]["knownHosts"].replace(f"[127.0.0.1]:{bob_port}", f"[{GATEWAY}]:{bob_port}", 1)
    assert known != bob_ws["access"]["ssh"]["knownHosts"]
    assert _exec(alice, alice_url, "sh", "-c", "cat > ~/.ssh/known_hosts", stdin=known + "\n")["exitCode"] == 0
    taken = _ssh_from(alice, alice_url, "bob", bob_port)
    assert taken["exitCode"] == 0, taken
    refused = _ssh_from(alice, alice_url, "alice", bob_port)
    assert refused["exitCode"] == 255 and "Permission denied (publickey" in refused["stderr"], refused
    direct = _exec(bob, url, "bash", "-c", f"timeout 5 bash -c 'exec 3<>/dev/tcp/{alice_ip}/22'")
    assert direct["exitCode"] != 0, direct
    _no_address_of_another(alice, alice_url, bob, url, bob_ip, alice_ip, first)


CONNECT_FROM = (
    "python3 -c 'import socket, sys; s = socket.socket(); s.settimeout(5); s.bind((sys.argv[1], 0));"
    " s.connect((sys.argv[2], int(sys.argv[3])))' {} {} {}"
)


def _no_address_of_another(alice, alice_url: str, bob, url: str, bob_ip: str, alice_ip: str, port: int) -> None:
    """Root in her guest, alice takes bob's address: nothing she sends from it (nor her ARP claiming it)
    leaves her port, and the host still reaches bob's guest at his address, not hers."""
    own = _exec(alice, alice_url, "sh", "-c", CONNECT_FROM.format(alice_ip, GATEWAY, port))
    assert own["exitCode"] == 0, own
    take = f"sudo ip address add {bob_ip}/32 dev eth0 && sudo ip neighbour flush dev eth0"
    give_back = f"sudo ip address del {bob_ip}/32 dev eth0"
    connect = CONNECT_FROM.format(bob_ip, GATEWAY, port)
    taken = _exec(alice, alice_url, "sh", "-c", f"{take} && {connect}; status=$?; {give_back}; exit $status")
    # Her ARP for the host, claiming his address, goes unanswered: no route (or, had it been
    # answered before, a connection that times out), never a refusal, which would mean it arrived.
    assert taken["exitCode"] != 0 and ("No route to host" in taken["stderr"] or "timed out" in taken["stderr"]), taken
    assert _exec(bob, url, "hostname")["stdout"] == "web\n"


SSH_TO_THE_HOST = (
    "timeout 20 ssh -i ~/.ssh/{} -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=~/.ssh/known_hosts"
    " -p {} dev@{} true"
)


def _ssh_from(http: requests.Session, url: str, key: str, port: int) -> dict:
    """ssh with ``key`` from inside a (ready) guest to a forward at the host's bridge address."""
    return _exec(http, url, "sh", "-c", SSH_TO_THE_HOST.format(key, port, GATEWAY))


FORM = b"""<!doctype html><html><body style="margin:0">
<input id="field" style="position:absolute; left:200px; top:150px; width:400px; font-size:32px">
</body></html>"""


def _serve_form():
    """A page on the host's bridge address: the one host address guests reach."""
    import http.server

    class Form(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(FORM)))
            self.end_headers()
            self.wfile.write(FORM)

        def log_message(self, format, *args):
            pass

    server = http.server.ThreadingHTTPServer((GATEWAY, 0), Form)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _Cdp:
    """A Chrome DevTools Protocol session through cwhost's proxy, on the cdpUrl's WebSocket: the
    browser's targets, and the page's, attached in flat mode as an agent's CDP client does."""

    def __init__(self, cdp_url: str):
        import websocket

        self._socket = websocket.create_connection(cdp_url, timeout=120)
        self._last_id = 0
        pages = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        attached = self.call("Target.attachToTarget", targetId=pages[0]["targetId"], flatten=True)
        self._page = attached["sessionId"]

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._last_id += 1
        message: dict = {"id": self._last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._socket.send(json.dumps(message))
        while True:
            answer = json.loads(self._socket.recv())
            if answer.get("id") == self._last_id:
                assert "error" not in answer, answer
                return answer["result"]

    def evaluate(self, expression: str):
        found = self.call("Runtime.evaluate", self._page, expression=expression, returnByValue=True)
        return found["result"].get("value")

    def close(self) -> None:
        self._socket.close()


def _live_views(http: requests.Session, url: str, field_value) -> None:
    """Live views in Chromium: each connects; a key typed in a view-only one changes nothing, in an
    interactive one it reaches the focused field; revoking one disconnects it."""
    browser = _headless_chromium()
    try:
        _key_in_a_live_view(browser, http, url, interactive=False)
        time.sleep(5)  # time for the key to arrive, were it sent
        assert field_value() == "typed by an agent"
        _key_in_a_live_view(browser, http, url, interactive=True)
        wait_until(lambda: field_value() == "typed by an agentz", 30, "the key typed in the interactive view")
    finally:
        browser.quit()


def _key_in_a_live_view(browser, http: requests.Session, url: str, interactive: bool) -> None:
    """Open a new live view, see it connect, type "z" in it, then revoke it and see it disconnected."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    view = http.post(url + "/live-views", json={"interactive": interactive}).json()
    browser.get(view["url"])
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 60).until(lambda _: status.text in ("Connected", "Connection failed"))
    assert status.text == "Connected"
    browser.execute_script("arguments[0].focus()", browser.find_element(By.CSS_SELECTOR, "#screen canvas"))
    ActionChains(browser).send_keys("z").perform()
    time.sleep(1)  # the key leaves noVNC before the view is revoked
    assert http.delete(url + "/live-views/" + view["id"]).status_code == 204
    WebDriverWait(browser, 30).until(lambda _: status.text in ("Disconnected", "Connection failed"))


def _an_agents_loop(http: requests.Session, url: str) -> None:
    """A CDP client drives the browser through the proxy; the click and the typing go through the input API."""
    import websocket

    cdp_url = http.get(url).json()["access"]["browser"]["cdpUrl"]
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(cdp_url.rsplit("/", 1)[0] + "/" + "x" * 43, timeout=10)
    form = _serve_form()
    cdp = _Cdp(cdp_url)
    try:
        cdp.call("Page.navigate", cdp._page, url=f"http://{GATEWAY}:{form.server_address[1]}/")
        wait_until(lambda: cdp.evaluate("!!document.getElementById('field')"), 60, "the page loaded")
        box = json.loads(cdp.evaluate("JSON.stringify(document.getElementById('field').getBoundingClientRect())"))
        x, y = round(box["x"] + box["width"] / 2), round(box["y"] + box["height"] / 2)
        # The screenshot shows the field where the page puts it: its coordinates are the screen's.
        from PIL import Image

        def field_drawn():
            screen = Image.open(io.BytesIO(http.get(url + "/screenshot").content)).convert("L")
            left_edge = [screen.getpixel((round(box["x"]) + dx, y)) for dx in range(-1, 3)]
            return min(left_edge) < 160 and screen.getpixel((x, y)) > 200

        wait_until(field_drawn, 60, "the field drawn on the screen where the page says it is")
        click = http.post(url + "/input", json={"actions": [{"type": "click", "x": x, "y": y}]})
        assert click.status_code == 200
        # As an agent would: see the click take effect (slow under TCG) before typing.
        wait_until(lambda: cdp.evaluate("document.activeElement.id") == "field", 30, "the field focused")
        typed = http.post(url + "/input", json={"actions": [{"type": "text", "text": "typed by an agent"}]})
        assert typed.status_code == 200
        wait_until(
            lambda: cdp.evaluate("document.getElementById('field').value") == "typed by an agent",
            30,
            "the typed text in the field",
        )
        _live_views(http, url, lambda: cdp.evaluate("document.getElementById('field').value"))
    finally:
        cdp.close()
        form.shutdown()
        form.server_close()
