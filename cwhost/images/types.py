"""Workstation types as the configuration declares them (``[types.ID]``), and the seed's nine."""

from __future__ import annotations

import os
from dataclasses import dataclass

from marshmallow import fields
from marshmallow.validate import Range

from cwhost.images.packages import SEED_PACKAGES, SEED_START_URLS, has_desktop, has_sound
from cwhost.model import Configuration
from cwhost.patterns import START_URL_PATTERN, FullMatch
from cwhost.settings import setting
from drivers.base import BootSource

DEBIAN_PACKAGE = r"^[a-z0-9][a-z0-9+.-]+$"


@dataclass(frozen=True)
class TypeSettings:
    """A workstation type as the file declares it (``[types.ID]``)."""

    cpu_cores: int = setting(validate=Range(1))
    memory_gb: int = setting(validate=Range(1))
    storage_gb: int = setting(validate=Range(1))
    description: str = setting("")
    gpu: str = setting("")
    region: str = setting("")
    idle_timeout_minutes: int = setting(0, validate=Range(0))
    running_timeout_minutes: int = setting(0, validate=Range(0))
    # What `cwhost images build` installs beyond every image's base.
    packages: tuple[str, ...] = setting(
        (),
        field=fields.List(fields.String(validate=FullMatch(DEBIAN_PACKAGE, error="Not a Debian package name."))),
        convert=tuple,
    )
    # The page a desktop type's full-screen browser opens.
    start_url: str = setting(
        "", validate=FullMatch(START_URL_PATTERN, error="must be an absolute URL (https://…, data:…) on one line")
    )
    # Files to boot instead of the built image (a hand-made image, or a kernel).
    image: str = setting("")
    kernel: str = setting("")
    initrd: str = setting("")
    cmdline: str = setting("")


@dataclass(frozen=True)
class WorkstationType:
    id: str
    description: str
    cpu_cores: int
    memory_gb: int
    storage_gb: int
    gpu: str | None
    region: str | None
    idle_timeout_minutes: int
    running_timeout_minutes: int
    # Files named in the configuration; empty when the type boots its built image.
    boot: BootSource
    packages: tuple[str, ...] = ()
    start_url: str = ""

    @classmethod
    def declared(cls, type_id: str, t: TypeSettings) -> WorkstationType:
        return cls(
            id=type_id,
            description=t.description,
            cpu_cores=t.cpu_cores,
            memory_gb=t.memory_gb,
            storage_gb=t.storage_gb,
            gpu=t.gpu or None,
            region=t.region or None,
            idle_timeout_minutes=t.idle_timeout_minutes,
            running_timeout_minutes=t.running_timeout_minutes,
            boot=BootSource(
                image=t.image or None, kernel=t.kernel or None, initrd=t.initrd or None, cmdline=t.cmdline or None
            ),
            packages=t.packages,
            start_url=t.start_url,
        )

    @property
    def boots_built_image(self) -> bool:
        """True unless the configuration names the files to boot."""
        return not (self.boot.image or self.boot.kernel)

    @property
    def missing_files(self) -> list[str]:
        """The boot files this type names that are not on disk."""
        named = (self.boot.image, self.boot.kernel, self.boot.initrd)
        return [path for path in named if path and not os.path.isfile(path)]

    @property
    def image_present(self) -> bool:
        return not self.missing_files

    @property
    def hardware(self) -> list[str]:
        """What the type's machine offers, in the second seed's words."""
        audio = ["speaker", "microphone"] if has_sound(self.packages) else []
        return ["keyboard", "mouse", "display", *audio]

    @property
    def software(self) -> list[str]:
        desktop = ["desktop"] if has_desktop(self.packages) else []
        return ["ssh", "terminal", "vnc", *desktop, *(["chromium"] if "chromium" in self.packages else [])]

    @property
    def capabilities(self) -> list[str]:
        """What a program can do in it through cwhost: exec, processes and files need the agents of
        cwhost's images (QEMU's and cwhost's guest service), cdp Chromium, audio PulseAudio."""
        display = ["screenshot", "input"]
        if not self.boots_built_image:
            # Files of the operator's own: cwhost vouches only for what the hypervisor does.
            return display
        agent = ["exec", "processes", "files"]
        audio = ["audio"] if has_sound(self.packages) else []
        return [*agent, *display, *(["cdp"] if "chromium" in self.packages else []), *audio]

    @property
    def configuration(self) -> Configuration:
        """The configuration a workstation of this type gets by default."""
        return Configuration(self.cpu_cores, self.memory_gb, self.storage_gb, self.gpu, self.region or "")


# The second seed's types, with sizes for what each is for; no images, for the fake driver.
_SEED_SIZES = {
    "python": ("Python development", 4, 8, 64, 120),
    "nodejs": ("Node.js development", 4, 8, 64, 120),
    "golang": ("Go development", 4, 8, 64, 120),
    "chromium": ("A Chromium browser", 2, 4, 32, 60),
    "zoom-chromium": ("Chromium for Zoom calls", 4, 8, 32, 60),
    "meet-chromium": ("Chromium for Google Meet calls", 4, 8, 32, 60),
    "voip": ("A VoIP softphone", 2, 4, 16, 60),
    "voip-chromium": ("A VoIP softphone with Chromium", 4, 8, 32, 60),
    "max": ("The largest workstation this server offers", 16, 64, 512, 0),
}


def _seed_type(type_id, description, cpu_cores, memory_gb, storage_gb, idle_timeout_minutes) -> TypeSettings:
    return TypeSettings(
        cpu_cores,
        memory_gb,
        storage_gb,
        description=description,
        idle_timeout_minutes=idle_timeout_minutes,
        packages=SEED_PACKAGES[type_id],
        start_url=SEED_START_URLS.get(type_id, ""),
    )


def declared_types(declared: dict) -> tuple[WorkstationType, ...]:
    return tuple(WorkstationType.declared(type_id, t) for type_id, t in sorted(declared.items()))


def seed_types() -> tuple[WorkstationType, ...]:
    return declared_types({k: _seed_type(k, *v) for k, v in _SEED_SIZES.items()})
