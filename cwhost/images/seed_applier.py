"""The guest's side of cwhost's NoCloud seed: a program of the images, run at every boot before sshd.

It applies the part of cloud-init's format that cwhost's seed uses
(drivers.libvirt.cloud_init): the hostname and its /etc/hosts line, the
locale, the one user with sudo and the account's SSH keys, the SSH host key
and no other, the files to write, and the commands to run once per instance;
then it grows the root file system to its disk. cloud-init does the same in
four Python processes whose imports alone take tens of seconds under TCG;
this takes the standard library only, and the seed stays one cloud-init
reads too (its user-data is JSON, which YAML reads).

Every boot applies it whole, so that what the seed says is what the guest
has: a key removed from the account is gone at the next launch. It runs as
root from ``cwhost-seed.service``; nothing here imports cwhost.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# The seed disk's serial (drivers.libvirt.cloud_init.SEED_SERIAL): the kernel names the disk in
# sysfs and makes its node as it probes it, so the seed is read without waiting for udev.
SEED_SERIAL = "cidata"
SEED_WAIT_SECONDS = 30
SEED_MOUNT = "/run/cwhost/seed"
# The instance whose commands have run: they run again only for a new one.
INSTANCE_FILE = "var/lib/cwhost/seed-instance"
SUDOERS_FILE = "etc/sudoers.d/90-cwhost-users"
HOST_KEY_FILE = "etc/ssh/ssh_host_ed25519_key"
# What this program does with each key of the user-data; any other is reported, not applied.
APPLIED_KEYS = frozenset(
    {
        "hostname",
        "manage_etc_hosts",
        "locale",
        "users",
        "ssh_deletekeys",
        "ssh_genkeytypes",
        "ssh_keys",
        "write_files",
        "runcmd",
    }
)

Run = Callable[[Sequence[str]], None]


class SeedError(Exception):
    """The seed is missing or not what cwhost writes."""


def read_seed(directory: Path) -> tuple[dict, dict]:
    """The seed's meta-data and user-data."""
    try:
        meta = json.loads((directory / "meta-data").read_text())
        user_data = (directory / "user-data").read_text()
    except (OSError, ValueError) as exc:
        raise SeedError(f"cannot read the seed: {exc}") from exc
    header, _, body = user_data.partition("\n")
    if header.strip() != "#cloud-config":
        raise SeedError("the seed's user-data is not #cloud-config")
    try:
        config = json.loads(body)
    except ValueError as exc:
        raise SeedError(f"the seed's user-data is not the JSON cwhost writes: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(config, dict):
        raise SeedError("the seed's meta-data and user-data must be mappings")
    return meta, config


def _write(path: Path, text: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Write then rename: a crash leaves the old file or the new, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.cwhost-seed")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(partial, mode)
    if owner is not None:
        os.chown(partial, *owner)
    os.replace(partial, path)


def apply_hostname(root: Path, config: dict, live: bool) -> None:
    hostname = config.get("hostname")
    if not hostname:
        return
    _write(root / "etc/hostname", hostname + "\n")
    if live:
        socket.sethostname(hostname)
    if config.get("manage_etc_hosts") == "localhost":
        # Its own name resolves, as Debian's installer writes it: sudo asks.
        hosts = root / "etc/hosts"
        lines = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost"]
        kept = [line for line in lines if not line.startswith("127.0.1.1")]
        _write(hosts, "\n".join([*kept, f"127.0.1.1\t{hostname}"]) + "\n")


def apply_locale(root: Path, config: dict) -> None:
    if config.get("locale"):
        _write(root / "etc/default/locale", f"LANG={config['locale']}\n")


def apply_users(root: Path, config: dict, run: Run) -> None:
    sudoers = []
    for user in config.get("users") or ():
        name = user["name"]
        if not _has_user(root, name):
            command = ["useradd", "--create-home", "--user-group", "--shell", user.get("shell", "/bin/bash")]
            if "uid" in user:
                command += ["--uid", str(user["uid"])]
            run([*command, name])  # its password is locked ("!") until one is set
        if user.get("sudo"):
            sudoers.append(f"{name} {user['sudo']}")
        _write_authorized_keys(root, name, user.get("ssh_authorized_keys") or ())
    if sudoers:
        _write(root / SUDOERS_FILE, "\n".join(sudoers) + "\n", mode=0o440)


def _has_user(root: Path, name: str) -> bool:
    passwd = root / "etc/passwd"
    return passwd.exists() and any(line.split(":", 1)[0] == name for line in passwd.read_text().splitlines())


def _write_authorized_keys(root: Path, name: str, keys: Sequence[str]) -> None:
    entry = _passwd_entry(root, name)
    uid, gid, home = int(entry[2]), int(entry[3]), root / entry[5].lstrip("/")
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(ssh_dir, uid, gid)
    _write(ssh_dir / "authorized_keys", "".join(key.strip() + "\n" for key in keys), mode=0o600, owner=(uid, gid))


def _passwd_entry(root: Path, name: str) -> list[str]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    raise SeedError(f"no user {name} after useradd")


def apply_host_key(root: Path, config: dict) -> None:
    """The seed's ed25519 host key, and no other: sshd offers only the key cwhost published."""
    keys = config.get("ssh_keys") or {}
    if "ed25519_private" not in keys:
        return
    for old in (root / "etc/ssh").glob("ssh_host_*"):
        if old.name not in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
            old.unlink()
    _write(root / HOST_KEY_FILE, keys["ed25519_private"], mode=0o600)
    _write(root / f"{HOST_KEY_FILE}.pub", keys["ed25519_public"].strip() + "\n")


def apply_files(root: Path, config: dict) -> None:
    for entry in config.get("write_files") or ():
        _write(root / entry["path"].lstrip("/"), entry["content"])


def run_commands_once(root: Path, meta: dict, config: dict, run: Run) -> None:
    """``runcmd`` once per instance, as cloud-init runs it: a changed seed is a new instance."""
    instance = str(meta.get("instance-id", ""))
    done = root / INSTANCE_FILE
    if done.exists() and done.read_text().strip() == instance:
        return
    for command in config.get("runcmd") or ():
        run(command)
    _write(done, instance + "\n")


def apply(root: Path, meta: dict, config: dict, run: Run, live: bool) -> list[str]:
    """Apply the seed to the system at ``root``; the user-data keys it did not apply."""
    apply_hostname(root, config, live)
    apply_locale(root, config)
    apply_users(root, config, run)
    apply_host_key(root, config)
    apply_files(root, config)
    run_commands_once(root, meta, config, run)
    return sorted(set(config) - APPLIED_KEYS)


def run_checked(command: Sequence[str]) -> None:
    result = subprocess.run(list(command), capture_output=True, text=True)
    if result.returncode != 0:
        raise SeedError(f"{' '.join(command)} failed (exit {result.returncode}): {result.stderr.strip()}")


def seed_device(sys_block: Path = Path("/sys/block"), wait_seconds: float = SEED_WAIT_SECONDS) -> str:
    """The seed disk's node. The initramfs loads virtio_blk, which probes every virtio disk at once;
    the wait covers a kernel that loads it later."""
    deadline = time.monotonic() + wait_seconds
    while True:
        for disk in sorted(sys_block.iterdir()):
            serial = disk / "serial"
            if serial.is_file() and serial.read_text().strip() == SEED_SERIAL:
                return f"/dev/{disk.name}"
        if time.monotonic() >= deadline:
            raise SeedError(f"no disk with the serial {SEED_SERIAL!r} after {wait_seconds:.0f} s")
        time.sleep(0.1)


def root_device() -> str | None:
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            device, mount_point, fs_type = line.split()[:3]
            if mount_point == "/" and fs_type == "ext4":
                return device
    return None


def main() -> int:
    mount = Path(SEED_MOUNT)
    mount.mkdir(parents=True, exist_ok=True)
    try:
        run_checked(["mount", "-t", "iso9660", "-o", "ro", seed_device(), str(mount)])
        try:
            meta, config = read_seed(mount)
        finally:
            run_checked(["umount", str(mount)])
        ignored = apply(Path("/"), meta, config, run_checked, live=True)
    except (SeedError, OSError, KeyError, TypeError) as exc:
        print(f"cwhost-seed: {exc}", file=sys.stderr)
        return 1
    if ignored:
        print(f"cwhost-seed: not applied (not a key cwhost's seed uses): {', '.join(ignored)}", file=sys.stderr)
    # The disk may have grown since the last boot (a PATCH of storageGB); ext4 grows online.
    device = root_device()
    grown = subprocess.run(["resize2fs", device], capture_output=True, text=True) if device else None
    if grown is not None and grown.returncode != 0:
        print(f"cwhost-seed: the root file system was not grown: {grown.stderr.strip()}", file=sys.stderr)
    print(f"cwhost-seed: applied instance {meta.get('instance-id')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
