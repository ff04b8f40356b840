"""What goes into each type's image, from Debian 12's archive.

Every image can be reached and managed: a kernel to boot directly, SSH,
Python for the seed applier (cwhost.images.seed_applier: the user and keys),
and the guest agent for addresses and commands. systemd-networkd (in systemd)
brings up the NICs and systemd-resolved takes the DNS servers DHCP gives. dbus lets
systemd-logind run, which turns the ACPI power button (a graceful stop) into
a shutdown; without it the guest ignores the button.
"""

from __future__ import annotations

from collections.abc import Sequence

SUITE = "bookworm"

BASE_PACKAGES = (
    "linux-image-amd64",
    # The initramfs's one program (cwhost.images.initramfs).
    "busybox-static",
    "systemd-sysv",
    "openssh-server",
    "python3",
    "qemu-guest-agent",
    "sudo",
    "dbus",
    "libpam-systemd",
    "systemd-resolved",
    "ca-certificates",
)

# A display, an X server on it and nothing else: the session script starts one
# full-screen program. xserver-xorg-legacy lets a service start Xorg, which
# has no console session of its own.
DESKTOP_PACKAGES = (
    "xserver-xorg-core",
    "xserver-xorg-legacy",
    "xserver-xorg-input-libinput",
    "xinit",
)
# socat relays DevTools from the NIC to Chromium's loopback port (see desktop_files).
CHROMIUM = ("chromium", "fonts-dejavu-core", "socat")
# Sound: one PulseAudio for the whole machine, whose speaker cwhost records (desktop_files.AUDIO_FILES);
# espeak-ng gives agents a voice to speak into a call with.
AUDIO = ("pulseaudio", "espeak-ng")
VOIP = ("baresip",) + AUDIO

# The seed's types: each one's own packages, and the page its desktop opens
# full-screen ("" for a type without a desktop).
SEED_PACKAGES: dict[str, tuple[str, ...]] = {
    "python": ("python3", "python3-venv", "python3-pip", "build-essential", "git"),
    "nodejs": ("nodejs", "npm"),
    "golang": ("golang-go",),
    "chromium": DESKTOP_PACKAGES + CHROMIUM,
    "zoom-chromium": DESKTOP_PACKAGES + CHROMIUM + AUDIO,
    "meet-chromium": DESKTOP_PACKAGES + CHROMIUM + AUDIO,
    "voip": VOIP,
    "voip-chromium": DESKTOP_PACKAGES + CHROMIUM + VOIP,
}
SEED_PACKAGES["max"] = tuple(dict.fromkeys(p for packages in SEED_PACKAGES.values() for p in packages))

SEED_START_URLS = {
    "chromium": "about:blank",
    "zoom-chromium": "https://app.zoom.us/wc",
    "meet-chromium": "https://meet.google.com/",
    "voip-chromium": "about:blank",
    "max": "about:blank",
}

# A type that asks for a GPU gets NVIDIA's driver from non-free, built for the
# image's kernel by DKMS (hence the headers).
GPU_PACKAGES = ("nvidia-driver", "firmware-misc-nonfree", "linux-headers-amd64")
GPU_COMPONENTS = ("main", "contrib", "non-free", "non-free-firmware")
COMPONENTS = ("main",)


def image_packages(type_packages: Sequence[str], with_gpu: bool) -> tuple[str, ...]:
    """Every package the image installs by name, base first, each once."""
    extra = GPU_PACKAGES if with_gpu else ()
    return tuple(dict.fromkeys((*BASE_PACKAGES, *type_packages, *extra)))


def image_components(with_gpu: bool) -> tuple[str, ...]:
    return GPU_COMPONENTS if with_gpu else COMPONENTS


def has_desktop(packages: Sequence[str]) -> bool:
    return "xinit" in packages


def has_sound(packages: Sequence[str]) -> bool:
    return "pulseaudio" in packages
