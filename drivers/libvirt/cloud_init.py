"""What a guest is told at boot: a cloud-init NoCloud seed, as an ISO image labelled ``cidata``.

The seed carries the hostname, ``locale: C.UTF-8`` (without the ``locales``
package cloud-init ends in ``error`` otherwise), one user with the SSH keys
and sudo, the workspace share mounted at ``~/workspace`` over virtiofs (a
systemd mount unit), and the SSH host key. The guest agent is started by the
image (cwhost's start it as soon as its port exists). Network configuration is
left to the image (systemd-networkd does DHCP; cloud-init's would fight it).
cwhost's images apply the seed with their own reader
(cwhost.images.seed_applier); an image with cloud-init applies the same
files. Everything is written with a JSON dumper (YAML reads JSON) and
``pycdlib``, never by formatting text, and read back the same way.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

import pycdlib

from drivers.base import GUEST_UID, SHARE_TAG, GuestSeed, HostKey

VOLUME_LABEL = "cidata"
# The seed disk's serial (domain_xml): the images' applier finds the disk by it in sysfs, without udev.
SEED_SERIAL = VOLUME_LABEL
# Where the guest finds GuestSeed.host_address (the images' DevTools relay reads it).
HOST_ADDRESS_FILE = "/etc/cwhost/host-address"
# Where the image's readiness unit writes what it has seen of the boot, for the guest agent to read.
READINESS_FILE = "/run/cwhost/ready.json"
_FILES = ("meta-data", "user-data", "network-config")


def hostname_of(name: str) -> str:
    """A workstation's name made a valid hostname: lower case letters, digits and inner hyphens, 63 at most."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "workstation"


def seed_files(seed: GuestSeed, name: str) -> dict[str, bytes]:
    """meta-data, user-data and network-config of a NoCloud seed for the domain ``name``.

    The instance id changes when the user-data does, so that cloud-init
    applies a changed seed (new keys) at the next boot, and only then; the
    host key is the seed's, so a new instance keeps it.
    """
    config: dict = {
        "hostname": seed.hostname,
        # The hostname in /etc/hosts too, or sudo cannot resolve it.
        "manage_etc_hosts": "localhost",
        "locale": "C.UTF-8",
        "users": [
            {
                "name": seed.user,
                "uid": GUEST_UID,
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": list(seed.ssh_keys),
            }
        ],
    }
    config.update(_host_key_config(seed))
    written = []
    if seed.host_address:
        written.append({"path": HOST_ADDRESS_FILE, "content": seed.host_address + "\n"})
    if seed.mount_share:
        unit_file, config["runcmd"] = _workspace_mount(seed.user)
        written.append(unit_file)
    if written:
        config["write_files"] = written
    user_data = b"#cloud-config\n" + _dumped(config)
    instance_id = f"{name}-{hashlib.sha256(user_data).hexdigest()[:12]}"
    return {
        "meta-data": _dumped({"instance-id": instance_id, "local-hostname": seed.hostname}),
        "user-data": user_data,
        "network-config": _dumped({"network": {"config": "disabled"}}),
    }


def _workspace_mount(user: str) -> tuple[dict, list[list[str]]]:
    """The share mounted at ~/workspace: its mount unit's file, and the commands that start it.

    A mount unit started once the user exists, not cloud-init's `mounts`: that
    module runs before users are made, and its mkdir would leave the user a
    home owned by root. Enabled for later boots without a reload of systemd
    (seconds under TCG: systemd finds a unit file it has not loaded yet by
    itself), and started without waiting: readiness waits for it (its
    workspace phase).
    """
    home = f"/home/{user}"
    unit = workspace_mount_unit(user)
    commands = [
        ["install", "-d", "-o", user, "-g", user, f"{home}/workspace"],
        ["systemctl", "--no-reload", "enable", unit],
        ["systemctl", "start", "--no-block", unit],
    ]
    return {"path": f"/etc/systemd/system/{unit}", "content": _mount_unit_text(home)}, commands


def _dumped(document: dict) -> bytes:
    """JSON, which YAML reads: cloud-init takes it as it is, and the images' own reader
    (cwhost.images.seed_applier) needs only Python's standard library."""
    return (json.dumps(document, indent=1) + "\n").encode()


def _host_key_config(seed: GuestSeed) -> dict:
    """The given host key, and no other: none made at boot, the image's deleted."""
    if seed.host_key is None:
        return {}
    keys = {"ed25519_private": seed.host_key.private_openssh, "ed25519_public": seed.host_key.public_line}
    return {"ssh_deletekeys": True, "ssh_genkeytypes": [], "ssh_keys": keys}


def workspace_mount_unit(user: str) -> str:
    """systemd's name for the mount of /home/USER/workspace (systemd-escape --path)."""
    return "home-" + user.replace("-", "\\x2d") + "-workspace.mount"


def _mount_unit_text(home: str) -> str:
    return (
        "[Unit]\nDescription=The cwhost workspace, shared by the host over virtiofs\n\n"
        f"[Mount]\nWhat={SHARE_TAG}\nWhere={home}/workspace\nType=virtiofs\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def write_seed_iso(path: Path, seed: GuestSeed, name: str) -> None:
    """The seed as an ISO 9660 image with Joliet and Rock Ridge names, labelled ``cidata``.

    Readable by its owner only: it may hold the guest's private host key
    (libvirt gives the file to QEMU's user while the domain runs).
    """
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
    for file_name, data in seed_files(seed, name).items():
        short = "/" + re.sub(r"[^A-Z0-9_]", "_", file_name.upper()) + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), short, rr_name=file_name, joliet_path="/" + file_name)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    iso.write(str(partial))
    iso.close()
    partial.replace(path)


def read_seed_iso(path: Path) -> dict[str, bytes]:
    """The files of a seed image, by their long names."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        files = {}
        for name in _FILES:
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, joliet_path="/" + name)
            files[name] = out.getvalue()
        return files
    finally:
        iso.close()


def seed_of(files: dict[str, bytes]) -> GuestSeed:
    """The GuestSeed a seed's files say."""
    config = json.loads(files["user-data"].partition(b"\n")[2])
    user = config["users"][0]
    written = {entry["path"]: entry["content"] for entry in config.get("write_files") or ()}
    return GuestSeed(
        hostname=config["hostname"],
        user=user["name"],
        ssh_keys=tuple(user.get("ssh_authorized_keys") or ()),
        mount_share=f"/etc/systemd/system/{workspace_mount_unit(user['name'])}" in written,
        host_address=written[HOST_ADDRESS_FILE].strip() if HOST_ADDRESS_FILE in written else None,
        host_key=HostKey(config["ssh_keys"]["ed25519_private"], config["ssh_keys"]["ed25519_public"])
        if "ssh_keys" in config
        else None,
    )
