"""Files every image gets on top of its packages, and the desktop session of the types that have one."""

from __future__ import annotations

import json

# The kernel boots the image's one file system directly: no partition table,
# no boot loader. cloud-init grows the file system to the disk at first boot.
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
DESKTOP_USER = "desktop"
# Chromium's DevTools listen on the guest's loopback (9222); this relay alone
# reaches them from the NIC, where only the host's forwarded port leads.
CDP_GUEST_PORT = 9223

BASE_FILES = {
    "etc/fstab": "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n",
    # One virtio NIC, named eth0 by net.ifnames=0; DHCP from libvirt's network or QEMU's.
    "etc/network/interfaces.d/eth0": "auto eth0\niface eth0 inet dhcp\n",
    # Only the NoCloud seed cwhost attaches: probing cloud providers' metadata
    # services would wait for timeouts at every boot. The network is ifupdown's.
    "etc/cloud/cloud.cfg.d/90-cwhost.cfg": json.dumps(
        {"datasource_list": ["NoCloud", "None"], "network": {"config": "disabled"}}
    )
    + "\n",
}

# Xorg started by a service, not from a console: Xwrapper must allow that.
DESKTOP_FILES = {
    "etc/X11/Xwrapper.config": "allowed_users=anybody\nneeds_root_rights=yes\n",
    "etc/systemd/system/cwhost-desktop.service": """[Unit]
Description=The workstation's display: one full-screen browser
After=systemd-user-sessions.service network-online.target

[Service]
User=desktop
WorkingDirectory=/home/desktop
ExecStart=/usr/bin/xinit /usr/local/lib/cwhost/desktop-session -- :0 vt7 -nolisten tcp -keeptty
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
""",
    # Chromium's DevTools listen on the guest's loopback only: an agent reaches
    # them through cwhost, never from the network.
    "usr/local/lib/cwhost/desktop-session": """#!/bin/sh
xset s off -dpms s noblank
command -v pulseaudio >/dev/null && pulseaudio --start
# No window manager: the window is placed and sized to the whole screen by hand.
size=$(xrandr --current | awk '/\\*/ {print $1; exit}')
exec chromium --kiosk --no-first-run --noerrdialogs --disable-infobars \\
    --window-position=0,0 --window-size="${size%x*},${size#*x}" \\
    --remote-debugging-address=127.0.0.1 --remote-debugging-port=9222 \\
    "$(cat /etc/cwhost/start-url)"
""",
}
CDP_FILES = {
    "etc/systemd/system/cwhost-cdp-relay.service": f"""[Unit]
Description=Chromium's DevTools, relayed from the NIC for cwhost's token-bound proxy
After=network-online.target

[Service]
User=desktop
ExecStart=/usr/bin/socat TCP-LISTEN:{CDP_GUEST_PORT},fork,reuseaddr TCP:127.0.0.1:9222
Restart=always

[Install]
WantedBy=multi-user.target
""",
}
EXECUTABLES = ("usr/local/lib/cwhost/desktop-session",)
