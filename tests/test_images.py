"""Types' images: what each installs, where built ones are found, and that a rebuild leaves existing disks alone.

The build itself (mmdebstrap, mkfs.ext4 -d, qemu-img) runs for real in
tests/test_real_vm_image.py, which boots what it made; here the builds are
directories laid out as the builder leaves them, with real qcow2 files.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from cwhost.accounts import tokens as auth
from cwhost.app import create_app
from cwhost.config.server import ConfigError
from cwhost.db.database import Database
from cwhost.images.builder import mmdebstrap_command
from cwhost.images.catalog import ImageCatalog
from cwhost.images.packages import BASE_PACKAGES
from tests.helpers import bearer, cli, make_config, wait_for_status

kvm = pytest.importorskip("drivers.libvirt.driver", reason="libvirt-python is not installed")


def _included(command: list[str]) -> list[str]:
    return next(arg for arg in command if arg.startswith("--include=")).removeprefix("--include=").split(",")


def _type(config, type_id):
    return config.workstation_type(type_id)


@pytest.mark.parametrize(
    "type_id, wanted",
    [
        ("python", {"python3", "python3-venv", "python3-pip", "build-essential", "git"}),
        ("nodejs", {"nodejs", "npm"}),
        ("golang", {"golang-go"}),
        ("chromium", {"chromium", "xinit", "xserver-xorg-core"}),
        ("zoom-chromium", {"chromium", "xinit", "pulseaudio"}),
        ("meet-chromium", {"chromium", "xinit", "pulseaudio"}),
        ("voip", {"baresip", "pulseaudio"}),
        ("voip-chromium", {"baresip", "pulseaudio", "chromium", "xinit"}),
        ("max", {"python3-venv", "npm", "golang-go", "chromium", "baresip", "pulseaudio"}),
    ],
)
def test_each_seed_type_installs_its_packages_on_the_base(tmp_path, type_id, wanted):
    config = make_config(tmp_path)
    command = mmdebstrap_command(_type(config, type_id), tmp_path / "root", "")
    included = _included(command)
    assert set(BASE_PACKAGES) | wanted <= set(included)
    assert {"openssh-server", "python3", "qemu-guest-agent", "linux-image-amd64"} <= set(included)
    assert len(included) == len(set(included))
    assert "nvidia-driver" not in included and "--components=main" in command


def test_a_type_with_a_gpu_gets_nvidias_driver_from_non_free(tmp_path):
    config = make_config(
        tmp_path,
        types={"cuda": {"cpu_cores": 4, "memory_gb": 8, "storage_gb": 64, "gpu": "NVIDIA L40S", "packages": ["git"]}},
    )
    command = mmdebstrap_command(_type(config, "cuda"), tmp_path / "root", "http://mirror.lan/debian")
    assert {"nvidia-driver", "firmware-misc-nonfree", "linux-headers-amd64", "git"} <= set(_included(command))
    assert "--components=main,contrib,non-free,non-free-firmware" in command
    assert command[-4:] == ["--", "bookworm", str(tmp_path / "root"), "http://mirror.lan/debian"]


def test_a_package_list_in_the_configuration_is_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"types\.lab\.value\.packages\.0: Not a Debian package name"):
        make_config(tmp_path, types={"lab": {"cpu_cores": 1, "memory_gb": 1, "storage_gb": 1, "packages": ["rm -rf"]}})


def _fake_build(catalog: ImageCatalog, type_id: str, build_id: str, packages: dict[str, str]) -> Path:
    """A build directory as the builder leaves it, with a real (small) qcow2 image."""
    build = catalog.type_dir(type_id) / build_id
    build.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(build / "disk.qcow2"), "1G"], check=True)
    (build / "vmlinuz").write_bytes(b"kernel " + build_id.encode())
    (build / "initrd.img").write_bytes(b"initrd " + build_id.encode())
    facts = {"size": (build / "disk.qcow2").stat().st_size, "sha256": "ab" * 32}
    manifest = {
        "builtAt": time.time(),
        "requested": sorted(packages),
        "packages": packages,
        "cmdline": "root=/dev/vda rw",
        "files": {"disk.qcow2": facts, "vmlinuz": facts, "initrd.img": facts},
    }
    (build / "manifest.json").write_text(json.dumps(manifest))
    catalog.set_current(type_id, build)
    return build


@pytest.fixture
def libvirt_server(tmp_path):
    from tests.test_libvirt_driver import _driver

    config = make_config(tmp_path / "data")
    Database(config.database_path).migrate()
    app = create_app(config, driver=_driver(tmp_path))
    yield app, config, bearer(auth.create_key(app.extensions["cwhost"].db, "alice").token)
    app.extensions["cwhost"].services.background.wait_idle()


def test_a_type_without_its_image_is_422_naming_the_file_and_the_command(libvirt_server):
    app, config, alice = libvirt_server
    client = app.test_client()
    refused = client.post("/v1/workstations", json={"name": "py", "type": "python"}, headers=alice)
    assert (refused.status_code, refused.get_json()["error"]) == (422, "unknown_asset")
    message = refused.get_json()["message"]
    assert str(config.images_dir / "python" / "current" / "disk.qcow2") in message
    assert "cwhost images build python" in message
    listed = {t["id"]: t for t in client.get("/v1/workstation-types", headers=alice).get_json()["data"]}
    assert listed["python"]["imagePresent"] is False and listed["python"]["image"] is None
    assert "python3-venv" in listed["python"]["packages"]


def test_a_rebuild_leaves_existing_disks_on_the_image_they_were_made_from(libvirt_server, tmp_path):
    app, config, alice = libvirt_server
    client = app.test_client()
    catalog = ImageCatalog(config.images_dir)
    _fake_build(catalog, "python", "20260101T000000Z", {"python3": "3.11.2-1+b1", "git": "1:2.39.5-0+deb12u1"})
    listed = {t["id"]: t for t in client.get("/v1/workstation-types", headers=alice).get_json()["data"]}
    assert listed["python"]["imagePresent"] is True and listed["python"]["missingFiles"] == []
    assert {"name": "python3", "version": "3.11.2-1+b1"} in listed["python"]["image"]["packages"]
    assert listed["python"]["image"]["sha256"] == "ab" * 32

    first = client.post("/v1/workstations", json={"name": "old", "type": "python"}, headers=alice).get_json()
    wait_for_status(client, alice, first["id"], "stopped")
    _fake_build(catalog, "python", "20260202T000000Z", {"python3": "3.11.2-1+b2", "git": "1:2.39.5-0+deb12u1"})
    second = client.post("/v1/workstations", json={"name": "new", "type": "python"}, headers=alice).get_json()
    wait_for_status(client, alice, second["id"], "stopped")

    driver = app.extensions["cwhost"].driver
    old_build, new_build = (catalog.type_dir("python") / b for b in ("20260101T000000Z", "20260202T000000Z"))
    old_spec, new_spec = (driver.describe("cwhost-" + ws["id"]) for ws in (first, second))
    assert (old_spec.boot.image, old_spec.boot.kernel) == (str(old_build / "disk.qcow2"), str(old_build / "vmlinuz"))
    assert new_spec.boot.image == str(new_build / "disk.qcow2")

    disk_dir = tmp_path / "disks"
    assert catalog.prune("python", disk_dir) == []
    assert old_build.is_dir()
    assert client.delete(f"/v1/workstations/{first['id']}", headers=alice).status_code == 204
    assert catalog.prune("python", disk_dir) == [old_build]
    assert not old_build.exists() and new_build.is_dir()
    # The current build stays even when no disk uses it.
    assert client.delete(f"/v1/workstations/{second['id']}", headers=alice).status_code == 204
    assert catalog.prune("python", disk_dir) == []
    assert catalog.current("python").directory == new_build


def test_images_list_and_types_check_say_what_is_built(tmp_path):
    env = {**os.environ, "CWHOST_DATA_DIR": str(tmp_path / "data")}
    checked = cli(env, "types", "check")
    assert checked.returncode == 1
    assert f"python: missing {tmp_path}/data/images/python/current/disk.qcow2 (cwhost images build python)" in (
        checked.stdout
    )
    _fake_build(ImageCatalog(tmp_path / "data" / "images"), "python", "20260101T000000Z", {"git": "1"})
    assert "python: ready" in cli(env, "types", "check").stdout
    listed = cli(env, "images", "list").stdout
    assert f"python: {tmp_path}/data/images/python/20260101T000000Z built " in listed
    assert "golang: not built (cwhost images build golang)" in listed
    refused = cli(env, "images", "build", "cobol")
    assert refused.returncode == 2 and "no workstation type 'cobol'" in refused.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_removing_a_failed_build_never_deletes_through_a_mount(tmp_path):
    """An interrupted mmdebstrap leaves the host's /dev nodes bind-mounted in its root: unmount, then delete."""
    from cwhost.images.builder import remove_build

    host_side = tmp_path / "host-dev"
    host_side.mkdir()
    (host_side / "null").write_text("the host's own")
    build = tmp_path / "images" / "python" / ".building-x"
    (build / "root" / "dev").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(host_side), str(build / "root" / "dev")], check=True)
    remove_build(build)
    assert not build.exists()
    assert (host_side / "null").read_text() == "the host's own"
    with open("/proc/self/mounts") as mounts:
        assert str(build) not in mounts.read()
