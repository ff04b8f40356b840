"""Files of the types with a desktop: the display with its one full-screen browser, Chromium's DevTools
relay, and the sound; on top of guest_files' BASE_FILES."""

from __future__ import annotations

from pathlib import Path

from cwhost.images import devtools_answer
from cwhost.images.guest_files import boot_priority
from drivers.libvirt.cloud_init import HOST_ADDRESS_FILE

DESKTOP_USER = "desktop"
# Chromium's DevTools listen on the guest's loopback (9222); this relay alone
# reaches them from the routed NIC, and answers only the host's address on
# cwhost's network (HOST_ADDRESS_FILE), where no other guest can reach it.
CDP_GUEST_PORT = 9223

# Xorg started by a service, not from a console: Xwrapper must allow that. The virtio display has
# no 3D, so Xorg has no GL at all: glamor (its GL acceleration) refuses the software renderer after
# loading it to ask (LLVM, ~100 MB, 2.4 s of Xorg's start under TCG), and GLX for X clients loads
# that renderer for good (6.6 s of a TCG boot, before the browser can start). Chromium draws in
# software without either, as it would on this display anyway.
DESKTOP_FILES = {
    "etc/X11/Xwrapper.config": "allowed_users=anybody\nneeds_root_rights=yes\n",
    "etc/X11/xorg.conf.d/20-cwhost-display.conf": """Section "Device"
    Identifier "display"
    Driver "modesetting"
    Option "AccelMethod" "none"
EndSection

Section "Module"
    Disable "glx"
EndSection
""",
    "etc/systemd/system/cwhost-desktop.service": """[Unit]
Description=The workstation's display: one full-screen browser
Wants=cwhost-browser-read.service
# It needs nothing of the seed nor of the network, unless its start page is on the
# network (DESKTOP_NETWORK_FILES): under TCG the browser alone takes most of a boot.

[Service]
User=desktop
WorkingDirectory=/home/desktop
# No wait for udev's coldplug (7 s into a TCG boot): the display's DRM device is there from the
# initramfs and Xorg finds it in sysfs; the keyboard and the tablet join as udev reaches them.
# The screen never blanks nor powers down (-s 0 -dpms).
ExecStart=/usr/bin/xinit /usr/local/lib/cwhost/desktop-session -- :0 vt7 -nolisten tcp -keeptty -s 0 -dpms
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
""",
    # Chromium's DevTools listen on the guest's loopback only: an agent reaches
    # them through cwhost, never from the network. There is no keyring to ask
    # for saved passwords.
    "usr/local/lib/cwhost/desktop-session": """#!/bin/sh
# No window manager: the window is placed and sized to the whole screen by hand, at the display's
# preferred mode, which Xorg sets: the first its connector lists (read by the shell, where xrandr
# was a process on the browser's way under TCG). After "--" the page is never read as a switch,
# whatever the configuration says.
for modes in /sys/class/drm/card*-*/modes; do
    read -r size < "$modes" && break
done
# Chromium itself, not Debian's /usr/bin/chromium: that script runs a dozen processes before the
# browser (0.6 s of a warm guest under TCG, more at boot). What it would add is here: its Google API
# keys, and its flags as they apply to this display (shared memory in /tmp, as it chooses for a
# /dev/shm under 3.8 GB; no Cast, no hyperlink pings, extensions from the web store allowed).
. /etc/chromium.d/apikeys
read -r start_url < /etc/cwhost/start-url
export CHROME_WRAPPER=/usr/bin/chromium CHROME_DESKTOP=chromium.desktop
# A kiosk has no address bar and no tab strip: the web pages Chromium keeps ready for its address
# bar's suggestions and its tab search would cost a renderer (~15 s of CPU at boot under TCG) for
# nothing anyone can open. The display has no GL (see 20-cwhost-display.conf): told so, Chromium
# composites in software at once, instead of starting its GPU process four times to find out.
exec /usr/lib/chromium/chromium --kiosk --no-first-run --noerrdialogs --disable-infobars --password-store=basic \\
    --disable-gpu --disable-dev-shm-usage --media-router=0 --disable-pings --no-default-browser-check \\
    --enable-remote-extensions \\
    --disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup,PreloadTopChromeWebUI \\
    --window-position=0,0 --window-size="${size%x*},${size#*x}" \\
    --remote-debugging-address=127.0.0.1 --remote-debugging-port=9222 \\
    -- "$start_url"
""",
}
# At boot the browser's program (300 MB) is not in the page cache yet. Faulted in as the browser
# runs (2,900 major faults across its processes at boot, against 440 with this read), a browser's
# start under TCG took 4 s longer than with the program read in one pass beside Xorg's start, and a
# boot's DevTools answered 3 s later.
# This unit does that read, with no wait on either side.
DESKTOP_FILES["etc/systemd/system/cwhost-browser-read.service"] = """[Unit]
Description=Chromium's program read into memory while the display starts

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'exec cat /usr/lib/chromium/chromium /usr/lib/chromium/*.pak /usr/lib/chromium/*.dat \\
    /usr/lib/chromium/*.bin > /dev/null'
"""
# A browser type is ready once its DevTools answer: the display is on the readiness path.
DESKTOP_FILES.update(boot_priority(unit) for unit in ("cwhost-desktop.service", "cwhost-browser-read.service"))
# A start page on the network opens once DHCP has answered, not as an error page.
DESKTOP_NETWORK_FILES = {
    "etc/systemd/system/cwhost-desktop.service.d/network.conf": (
        "[Unit]\nWants=network-online.target\nAfter=network-online.target\n"
    ),
}
CDP_FILES = {
    # Standard library only, as the seed applier.
    "usr/local/lib/cwhost/devtools-answer": "#!/usr/bin/python3 -IS\n" + Path(devtools_answer.__file__).read_text(),
    "etc/systemd/system/cwhost-cdp-relay.service": f"""[Unit]
Description=Chromium's DevTools, relayed from the NIC for cwhost's token-bound proxy
# The seed says the host's address. It listens on every address, before DHCP has given the one the
# proxy reaches it at, which the readiness report awaits (its network phase).
After=cwhost-seed.service
ConditionPathExists={HOST_ADDRESS_FILE}

[Service]
User=desktop
# socat's range= refuses every peer but the host's address on cwhost's
# network, which the seed gives; on any other network the seed gives none,
# and the relay does not run.
ExecStart=/bin/sh -c 'exec /usr/bin/socat \\
    TCP-LISTEN:{CDP_GUEST_PORT},fork,reuseaddr,range=$$(cat {HOST_ADDRESS_FILE})/32 TCP:127.0.0.1:9222'
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
""",
}
# Sound: one PulseAudio for the whole machine, so that every user's programs (the desktop's browser,
# a softphone, the guest user's commands and the guest service's recorder) play to one speaker with
# no login session. Every local user is the tenant's, so its socket takes them all. The speaker is a
# null sink (nothing is heard; the guest service records its monitor); the microphone is what is
# played to microphone_feed (paplay -d microphone_feed). Clients go to it alone, never to a
# per-user daemon of their own.
PULSE_SOCKET = "/run/pulse/native"
PULSE_SCRIPT = f"""load-module module-native-protocol-unix auth-anonymous=1 socket={PULSE_SOCKET}
load-module module-null-sink sink_name=speaker sink_properties=device.description=Speaker
load-module module-null-sink sink_name=microphone_feed sink_properties=device.description=Microphone-feed
load-module module-remap-source master=microphone_feed.monitor source_name=microphone
load-module module-suspend-on-idle
set-default-sink speaker
set-default-source microphone
"""
AUDIO_FILES = {
    "etc/cwhost/pulse.pa": PULSE_SCRIPT,
    "etc/pulse/client.conf.d/50-cwhost.conf": f"default-server = unix:{PULSE_SOCKET}\nautospawn = no\n",
    "etc/systemd/system/cwhost-sound.service": """[Unit]
Description=The workstation's sound: one PulseAudio for every user, its speaker recorded by cwhost
After=local-fs.target

[Service]
ExecStart=/usr/bin/pulseaudio --system --daemonize=no --disallow-exit --exit-idle-time=-1 \\
    --disallow-module-loading --log-target=journal -n --file=/etc/cwhost/pulse.pa
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
""",
}
# The per-user daemon Debian starts with each login session: the system's one serves every user.
USER_UNITS_MASKED = ("pulseaudio.service", "pulseaudio.socket")

EXECUTABLES = ("usr/local/lib/cwhost/desktop-session", "usr/local/lib/cwhost/devtools-answer")
