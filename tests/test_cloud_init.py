"""The cloud-init NoCloud seed: an ISO labelled cidata whose files say what the guest must be."""

from __future__ import annotations

import pycdlib
import pytest
import yaml

from drivers.base import SHARE_TAG, GuestSeed
from drivers.libvirt.cloud_init import (
    HOST_ADDRESS_FILE,
    hostname_of,
    read_seed_iso,
    seed_files,
    seed_of,
    write_seed_iso,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE+oWZ5C4NzdHUnsH/I6CyJpex+Gh3+oYR2m+HorZHGM alice@laptop"


@pytest.mark.parametrize(
    "name,hostname",
    [("My-New-Workstation", "my-new-workstation"), ("a.b_c", "a-b-c"), ("---", "workstation"), ("x" * 70, "x" * 63)],
)
def test_names_become_hostnames(name, hostname):
    assert hostname_of(name) == hostname


def test_the_seed_is_an_iso_labelled_cidata_that_reads_back(tmp_path):
    seed = GuestSeed("box", "dev", (KEY,), mount_share=True)
    path = tmp_path / "seed.iso"
    write_seed_iso(path, seed, "cwhost-ws-1")
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
    finally:
        iso.close()
    files = read_seed_iso(path)
    assert seed_of(files) == seed
    assert files["user-data"].startswith(b"#cloud-config\n")


@pytest.mark.parametrize("mount_share", [False, True])
def test_the_host_address_is_a_file_the_devtools_relay_reads_and_reads_back(tmp_path, mount_share):
    seed = GuestSeed("box", "dev", (KEY,), mount_share=mount_share, host_address="192.168.150.1")
    files = seed_files(seed, "cwhost-ws-1")
    written = {f["path"]: f["content"] for f in yaml.safe_load(files["user-data"])["write_files"]}
    assert written[HOST_ADDRESS_FILE] == "192.168.150.1\n"
    assert seed_of(files) == seed
    # Without it, no file: the relay's unit, conditioned on it, does not start.
    assert seed_of(seed_files(GuestSeed("box", "dev"), "cwhost-ws-1")).host_address is None


def test_user_data_gives_the_user_keys_sudo_locale_and_the_workspace(tmp_path):
    files = seed_files(GuestSeed("box", "dev", (KEY,), mount_share=True), "cwhost-ws-1")
    config = yaml.safe_load(files["user-data"])
    assert config["hostname"] == "box" and config["locale"] == "C.UTF-8"
    (user,) = config["users"]
    assert user["name"] == "dev" and user["ssh_authorized_keys"] == [KEY] and "NOPASSWD" in user["sudo"]
    (unit,) = config["write_files"]
    assert unit["path"] == "/etc/systemd/system/home-dev-workspace.mount"
    assert f"What={SHARE_TAG}\nWhere=/home/dev/workspace\nType=virtiofs" in unit["content"]
    assert config["runcmd"] == [
        ["install", "-d", "-o", "dev", "-g", "dev", "/home/dev/workspace"],
        ["systemctl", "--no-reload", "enable", "home-dev-workspace.mount"],
        ["systemctl", "start", "--no-block", "home-dev-workspace.mount"],
    ]
    assert yaml.safe_load(files["network-config"]) == {"network": {"config": "disabled"}}
    without_share = yaml.safe_load(seed_files(GuestSeed("box", "dev"), "cwhost-ws-1")["user-data"])
    assert "write_files" not in without_share and "runcmd" not in without_share


def test_the_instance_changes_when_the_keys_do_and_only_then():
    def instance(seed):
        return yaml.safe_load(seed_files(seed, "cwhost-ws-1")["meta-data"])["instance-id"]

    first = instance(GuestSeed("box", "dev", (KEY,)))
    assert instance(GuestSeed("box", "dev", (KEY,))) == first
    assert instance(GuestSeed("box", "dev", ())) != first


def test_hostile_text_stays_data(tmp_path):
    seed = GuestSeed("box", "dev", ("ssh-ed25519 AAAA\n#cloud-config\nruncmd: [rm -rf /]",))
    files = seed_files(seed, "cwhost-ws-1")
    config = yaml.safe_load(files["user-data"])
    assert config["users"][0]["ssh_authorized_keys"] == list(seed.ssh_keys)
    assert "runcmd" not in config

