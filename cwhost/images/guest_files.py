"""Files every image gets on top of its packages, and the desktop session of the types that have one."""

from __future__ import annotations

import json

from drivers.libvirt.cloud_init import HOST_ADDRESS_FILE, READINESS_FILE
from drivers.libvirt.domain_xml import FORWARDING_MAC

# The kernel boots the image's one file system directly: no partition table,
# no boot loader. cloud-init grows the file system to the disk at first boot.
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
DESKTOP_USER = "desktop"
# Chromium's DevTools listen on the guest's loopback (9222); this relay alone
# reaches them from the routed NIC, and answers only the host's address on
# cwhost's network (HOST_ADDRESS_FILE), where no other guest can reach it.
CDP_GUEST_PORT = 9223

# The forwarding NIC: the address QEMU forwards to, and no route of the main
# table, so the guest's own traffic never goes out by it. A forwarded
# connection arrives with its real peer's address (a LAN host, another
# guest), which the main table would answer through eth0, where it is lost:
# so what is sent from 10.0.2.15 (the answers to forwarded connections) takes
# a table of its own, back through QEMU. No IPv6: QEMU's router advertisement
# would give a default route that goes nowhere.
FORWARDS_INTERFACE = """allow-hotplug fwd0
iface fwd0 inet static
    address 10.0.2.15/24
    pre-up echo 1 > /proc/sys/net/ipv6/conf/$IFACE/disable_ipv6
    pre-up echo 2 > /proc/sys/net/ipv4/conf/$IFACE/rp_filter
    post-up ip route replace default via 10.0.2.2 dev $IFACE table 15
    post-up ip rule add from 10.0.2.15 table 15 priority 1500
    pre-down ip rule del from 10.0.2.15 table 15 priority 1500
"""

# What this boot has passed, and when (seconds since the kernel started), for
# cwhost to read through the guest agent (READINESS_FILE): each phase the
# guest has, in the order passed, and ready once all are. It starts early and
# polls, so that a boot that hangs still says how far it got.
REPORT_READY = rf"""#!/bin/sh
report=${{CWHOST_READY_FILE:-{READINESS_FILE}}}
mkdir -p "$(dirname "$report")"
ready=false
phases=""
now() {{ cut -d' ' -f1 /proc/uptime; }}
# When a unit became active, in seconds since boot; nothing while it has not.
entered() {{
    t=$(systemctl show -p ActiveEnterTimestampMonotonic --value "$1" 2>/dev/null)
    [ -n "$t" ] && [ "$t" != 0 ] && awk -v t="$t" 'BEGIN {{ printf "%.3f", t / 1000000 }}'
}}
write() {{
    printf '{{"ready":%s,"phases":[%s]}}\n' "$ready" "$phases" > "$report.tmp" && mv "$report.tmp" "$report"
}}
passed() {{ phases="$phases${{phases:+,}}[\"$1\",$2]"; write; }}
# Chromium's DevTools answer, and the relay that takes them to the NIC runs.
devtools() {{
    request='GET /json/version HTTP/1.1\r\nHost: 127.0.0.1:9222\r\nConnection: close\r\n\r\n'
    systemctl is-active --quiet cwhost-cdp-relay.service &&
        printf "$request" | socat -T2 - TCP:127.0.0.1:9222 2>/dev/null | grep -q webSocketDebuggerUrl
}}
passed kernel "$(systemctl show -p UserspaceTimestampMonotonic --value | awk '{{ printf "%.3f", $1 / 1000000 }}')"
pending="first-boot sshd"
while [ -n "$pending" ]; do
    left=""
    for phase in $pending; do
        at=""
        case $phase in
        first-boot) at=$(entered cloud-final.service) ;;
        sshd) at=$(entered ssh.service) ;;
        workspace) at=$(entered "$workspace") ;;
        devtools) devtools && at=$(now) ;;
        esac
        if [ -z "$at" ]; then
            left="$left $phase"
            continue
        fi
        passed "$phase" "$at"
        if [ "$phase" = first-boot ]; then
            # What else this guest has, its seed now applied: a workspace to mount, DevTools to relay.
            workspace=$(cd /etc/systemd/system && ls home-*-workspace.mount 2>/dev/null | head -n 1)
            [ -n "$workspace" ] && left="$left workspace"
            [ -f {HOST_ADDRESS_FILE} ] && [ -f /etc/systemd/system/cwhost-cdp-relay.service ] && left="$left devtools"
        fi
    done
    pending=$left
    [ -n "$pending" ] && sleep 1
done
ready=true
passed ready "$(now)"
"""

BASE_FILES = {
    "etc/fstab": "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n",
    # The routed NIC, on libvirt's network: DHCP gives it its address, its route and DNS.
    "etc/network/interfaces.d/eth0": "allow-hotplug eth0\niface eth0 inet dhcp\n",
    # The NIC that only carries forwarded ports in (QEMU's user-mode network,
    # restricted): named by its MAC, whatever order the NICs are found in.
    "etc/systemd/network/10-cwhost-forwards.link": f"[Match]\nMACAddress={FORWARDING_MAC}\n\n[Link]\nName=fwd0\n",
    "etc/network/interfaces.d/fwd0": FORWARDS_INTERFACE,
    # Only the NoCloud seed cwhost attaches: probing cloud providers' metadata
    # services would wait for timeouts at every boot. The network is ifupdown's.
    "usr/local/lib/cwhost/report-ready": REPORT_READY,
    "etc/systemd/system/cwhost-ready.service": """[Unit]
Description=Tell cwhost how this boot goes, and when the workstation is ready
DefaultDependencies=no
After=local-fs.target

[Service]
Type=simple
ExecStart=/usr/local/lib/cwhost/report-ready

[Install]
WantedBy=multi-user.target
""",
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
# After "--" the page is never read as a switch, whatever the configuration says.
size=$(xrandr --current | awk '/\\*/ {print $1; exit}')
exec chromium --kiosk --no-first-run --noerrdialogs --disable-infobars \\
    --window-position=0,0 --window-size="${size%x*},${size#*x}" \\
    --remote-debugging-address=127.0.0.1 --remote-debugging-port=9222 \\
    -- "$(cat /etc/cwhost/start-url)"
""",
}
CDP_FILES = {
    "etc/systemd/system/cwhost-cdp-relay.service": f"""[Unit]
Description=Chromium's DevTools, relayed from the NIC for cwhost's token-bound proxy
Wants=network-online.target
After=network-online.target cloud-init.service
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
EXECUTABLES = ("usr/local/lib/cwhost/desktop-session", "usr/local/lib/cwhost/report-ready")
