"""Workstations' disks: qcow2 files made and grown with qemu-img."""

from __future__ import annotations

import subprocess
from pathlib import Path

from drivers.base import ProvisioningError


def _qemu_img(*args: str) -> None:
    try:
        subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=True, timeout=120)
    except subprocess.CalledProcessError as exc:
        raise ProvisioningError(f"qemu-img {args[0]} failed: {exc.stderr.strip()}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProvisioningError(f"qemu-img {args[0]} failed: {exc}") from exc


def create(path: Path, size_gb: int, base: str | None) -> None:
    """An empty disk, or a copy-on-write overlay of ``base``."""
    backing = ["-b", base, "-F", "qcow2"] if base else []
    _qemu_img("create", "-q", "-f", "qcow2", *backing, str(path), f"{size_gb}G")


def grow(path: Path, size_gb: int) -> None:
    _qemu_img("resize", "-q", str(path), f"{size_gb}G")
