"""The images' seed applier, run against a directory standing in for a guest's root: what cwhost's
seed says is what the guest has, at every boot, and cloud-init reads the same seed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from cwhost.images.seed_applier import APPLIED_KEYS, HOST_KEY_FILE, SeedError, apply, read_seed, seed_device
from drivers.base import GUEST_UID, GuestSeed, HostKey
from drivers.libvirt.cloud_init import HOST_ADDRESS_FILE, SEED_SERIAL, seed_files

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE+oWZ5C4NzdHUnsH/I6CyJpex+Gh3+oYR2m+HorZHGM alice@laptop"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBu6xZ0BUIsQQX8+sQJmTEsDUmZwhN1hC9UO7DVMJqPh bob@desk"
HOST_KEY = HostKey(
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg==\n-----END OPENSSH PRIVATE KEY-----\n", "ssh-ed25519 AAAA host"
)


class Guest:
    """A root directory with the files an image has, and a useradd that writes to it."""

    def __init__(self, root: Path):
        self.root = root
        self.commands: list[list[str]] = []
        (root / "etc/ssh").mkdir(parents=True)
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
        (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\timage-builder\n")
        (root / "etc/ssh/ssh_host_rsa_key").write_text("made at build time\n")

    def run(self, command):
        self.commands.append(list(command))
        if command[0] == "useradd":
            name, uid = command[-1], int(command[command.index("--uid") + 1])
            with (self.root / "etc/passwd").open("a") as passwd:
                passwd.write(f"{name}:x:{uid}:{uid}::/home/{name}:/bin/bash\n")
            (self.root / "home" / name).mkdir(parents=True)

    def boot(self, seed: GuestSeed, name: str = "cwhost-ws-1") -> list[str]:
        seed_dir = self.root / "run/seed"
        seed_dir.mkdir(parents=True, exist_ok=True)
        for file_name, data in seed_files(seed, name).items():
            (seed_dir / file_name).write_bytes(data)
        meta, config = read_seed(seed_dir)
        return apply(self.root, meta, config, self.run, live=False)

    def text(self, path: str) -> str:
        return (self.root / path).read_text()

    def mode(self, path: str) -> int:
        return stat.S_IMODE(os.stat(self.root / path).st_mode)


@pytest.fixture
def guest(tmp_path) -> Guest:
    return Guest(tmp_path / "root")


def test_a_first_boot_gets_its_name_user_keys_sudo_host_key_and_files(guest):
    seed = GuestSeed("box", "dev", (KEY,), mount_share=True, host_address="192.168.150.1", host_key=HOST_KEY)
    assert guest.boot(seed) == []
    assert guest.text("etc/hostname") == "box\n"
    # Its own name resolves (sudo asks), and the image's old line is gone.
    assert "127.0.1.1\tbox" in guest.text("etc/hosts") and "image-builder" not in guest.text("etc/hosts")
    assert guest.text("etc/default/locale") == "LANG=C.UTF-8\n"
    assert [c for c in guest.commands if c[0] == "useradd"] == [
        ["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", "--uid", str(GUEST_UID), "dev"]
    ]
    assert guest.text("etc/sudoers.d/90-cwhost-users") == "dev ALL=(ALL) NOPASSWD:ALL\n"
    assert guest.mode("etc/sudoers.d/90-cwhost-users") == 0o440
    assert guest.text("home/dev/.ssh/authorized_keys") == KEY + "\n"
    assert guest.mode("home/dev/.ssh/authorized_keys") == 0o600 and guest.mode("home/dev/.ssh") == 0o700
    assert (guest.root / "home/dev/.ssh/authorized_keys").stat().st_uid == GUEST_UID
    # The published host key and no other: sshd offers only what clients were told.
    assert guest.text(HOST_KEY_FILE) == HOST_KEY.private_openssh and guest.mode(HOST_KEY_FILE) == 0o600
    assert guest.text(HOST_KEY_FILE + ".pub") == HOST_KEY.public_line + "\n"
    assert sorted(p.name for p in (guest.root / "etc/ssh").iterdir()) == [
        "ssh_host_ed25519_key",
        "ssh_host_ed25519_key.pub",
    ]
    assert guest.text(HOST_ADDRESS_FILE.lstrip("/")) == "192.168.150.1\n"
    assert "Where=/home/dev/workspace" in guest.text("etc/systemd/system/home-dev-workspace.mount")
    assert ["systemctl", "start", "--no-block", "home-dev-workspace.mount"] in guest.commands


def test_a_relaunch_keeps_the_user_and_runs_the_commands_only_for_a_new_seed(guest):
    seed = GuestSeed("box", "dev", (KEY,), mount_share=True, host_key=HOST_KEY)
    guest.boot(seed)
    guest.commands.clear()
    guest.boot(seed)
    assert guest.commands == []  # the same instance: no useradd, no runcmd again
    # A key removed from the account and another added: a new instance, whose keys replace the old.
    guest.boot(GuestSeed("box", "dev", (OTHER_KEY,), mount_share=True, host_key=HOST_KEY))
    assert guest.text("home/dev/.ssh/authorized_keys") == OTHER_KEY + "\n"
    assert [c[0] for c in guest.commands] == ["install", "systemctl", "systemctl"]
    assert guest.text(HOST_KEY_FILE) == HOST_KEY.private_openssh


def test_every_key_cwhost_s_seed_can_hold_is_applied_and_others_are_reported(guest, tmp_path):
    seed = GuestSeed("box", "dev", (KEY,), mount_share=True, host_address="10.0.0.1", host_key=HOST_KEY)
    config = read_seed_from(seed, tmp_path)[1]
    assert set(config) <= APPLIED_KEYS
    config["bootcmd"] = [["reboot"]]
    assert apply(guest.root, {"instance-id": "i"}, config, guest.run, live=False) == ["bootcmd"]
    assert ["reboot"] not in guest.commands


def test_cloud_init_reads_the_same_seed(tmp_path):
    """The user-data is JSON under #cloud-config: YAML (cloud-init's reader) sees what the applier sees."""
    seed = GuestSeed("box", "dev", (KEY, OTHER_KEY), mount_share=True, host_key=HOST_KEY)
    meta, config = read_seed_from(seed, tmp_path)
    files = seed_files(seed, "cwhost-ws-1")
    assert yaml.safe_load(files["user-data"]) == config
    assert yaml.safe_load(files["meta-data"]) == meta


@pytest.mark.parametrize(
    "user_data", [b"#!/bin/sh\nrm -rf /\n", b"#cloud-config\nhostname: yaml-only\n", b"#cloud-config\n[1, 2]\n"]
)
def test_a_seed_cwhost_did_not_write_is_refused(tmp_path, user_data):
    (tmp_path / "meta-data").write_text('{"instance-id": "i"}')
    (tmp_path / "user-data").write_bytes(user_data)
    with pytest.raises(SeedError):
        read_seed(tmp_path)


def read_seed_from(seed: GuestSeed, directory: Path) -> tuple[dict, dict]:
    for file_name, data in seed_files(seed, "cwhost-ws-1").items():
        (directory / file_name).write_bytes(data)
    return read_seed(directory)


def _sys_block(tmp_path: Path, serials: dict[str, str]) -> Path:
    sys_block = tmp_path / "sys/block"
    for disk, serial in serials.items():
        (sys_block / disk).mkdir(parents=True)
        if serial:
            (sys_block / disk / "serial").write_text(serial + "\n")
    return sys_block


def test_the_seed_disk_is_found_by_the_serial_the_host_gives_it_whatever_its_name(tmp_path):
    sys_block = _sys_block(tmp_path, {"sr0": "", "vda": "", "vdc": "data", "vdd": SEED_SERIAL})
    assert seed_device(sys_block, wait_seconds=0) == "/dev/vdd"


def test_without_a_seed_disk_the_applier_fails_saying_so(tmp_path):
    sys_block = _sys_block(tmp_path, {"vda": ""})
    with pytest.raises(SeedError, match="no disk with the serial 'cidata'"):
        seed_device(sys_block, wait_seconds=0.2)
