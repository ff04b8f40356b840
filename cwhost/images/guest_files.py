"""Files every image gets on top of its packages, and the desktop session of the types that have one."""

from __future__ import annotations

from pathlib import Path

import drivers.guest_service
from cwhost.images import seed_applier
from drivers.libvirt.cloud_init import HOST_ADDRESS_FILE, READINESS_FILE
from drivers.libvirt.domain_xml import FORWARDING_MAC

# The kernel boots the image's one file system directly: no partition table,
# no boot loader. The seed applier grows the file system to the disk at each boot.
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
# polls, so that a boot that hangs still says how far it got. Each round is
# one systemctl call for every unit still awaited, and shell arithmetic: under
# TCG each process costs a tenth of a second, taken from the boot it watches.
REPORT_READY = rf"""#!/bin/sh
report=${{CWHOST_READY_FILE:-{READINESS_FILE}}}
mkdir -p "${{report%/*}}"
ready=false
phases=""
seconds() {{ printf '%d.%03d' $(($1 / 1000000)) $(($1 / 1000 % 1000)); }}
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
passed kernel "$(seconds "$(systemctl show -p UserspaceTimestampMonotonic --value)")"
pending="first-boot sshd"
while [ -n "$pending" ]; do
    units=""
    for phase in $pending; do
        case $phase in
        first-boot) units="$units cwhost-seed.service" ;;
        sshd) units="$units ssh.service" ;;
        workspace) units="$units $workspace" ;;
        service) units="$units cwhost-guest.service" ;;
        esac
    done
    # When each became active, in microseconds since boot (0: not yet), in the order asked.
    set -- $(systemctl show -p ActiveEnterTimestampMonotonic --value $units 2>/dev/null)
    left=""
    for phase in $pending; do
        at=""
        if [ "$phase" = devtools ]; then
            devtools && read -r up _ < /proc/uptime && at=$up
        else
            [ "${{1:-0}}" != 0 ] && at=$(seconds "$1")
            [ $# -gt 0 ] && shift
        fi
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
            [ -f {HOST_ADDRESS_FILE} ] && [ -f /etc/systemd/system/cwhost-guest.service ] && left="$left service"
        fi
    done
    pending=$left
    [ -n "$pending" ] && sleep 0.5
done
ready=true
read -r up _ < /proc/uptime
passed ready "$up"
"""

# Units a workstation never needs, masked: timers that would run apt or scrub
# the disk on a metered machine, and their boot-time parts.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "man-db.timer",
)

# Early, beside the rest of sysinit (no default dependencies): the root file
# system and the seed's device are all it needs. Before sshd, which needs the
# host key and the user, and before the DevTools relay, which needs the host's
# address. A seed that cannot be applied fails this unit, and the workstation
# never says it is ready.
SEED_UNIT = r"""[Unit]
Description=Apply cwhost's seed: hostname, user, SSH keys, host key, files
DefaultDependencies=no
Wants=dev-disk-by\x2dlabel-cidata.device
After=dev-disk-by\x2dlabel-cidata.device local-fs.target systemd-sysusers.service
Before=ssh.service systemd-user-sessions.service cwhost-cdp-relay.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/cwhost/apply-seed

[Install]
WantedBy=multi-user.target
"""

BASE_FILES = {
    "etc/fstab": "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n",
    # The routed NIC, on libvirt's network: DHCP gives it its address, its route and DNS.
    "etc/network/interfaces.d/eth0": "allow-hotplug eth0\niface eth0 inet dhcp\n",
    # The NIC that only carries forwarded ports in (QEMU's user-mode network,
    # restricted): named by its MAC, whatever order the NICs are found in.
    "etc/systemd/network/10-cwhost-forwards.link": f"[Match]\nMACAddress={FORWARDING_MAC}\n\n[Link]\nName=fwd0\n",
    "etc/network/interfaces.d/fwd0": FORWARDS_INTERFACE,
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
    # The seed, applied at every boot before sshd starts and before the
    # first-boot phase of the readiness report.
    "usr/local/lib/cwhost/apply-seed": "#!/usr/bin/python3\n" + Path(seed_applier.__file__).read_text(),
    "etc/systemd/system/cwhost-seed.service": SEED_UNIT,
}

# The guest service, copied as a package (its host-side client stays on the host).
GUEST_SERVICE_SOURCE = Path(drivers.guest_service.__file__).parent
GUEST_SERVICE_MODULES = tuple(sorted(path.stem for path in GUEST_SERVICE_SOURCE.glob("*.py") if path.stem != "client"))
GUEST_SERVICE_FILES = {
    f"usr/local/lib/cwhost/guest_service/{module}.py": (GUEST_SERVICE_SOURCE / f"{module}.py").read_text()
    for module in GUEST_SERVICE_MODULES
}
# On cwhost's network only (the host's address, which the seed gives, is the one peer it answers);
# elsewhere it does not run. Ready (notify) once it listens, which the readiness report awaits.
GUEST_SERVICE_UNIT = f"""[Unit]
Description=cwhost's guest service: processes that stream, and files, for the host alone
After=cwhost-seed.service
ConditionPathExists={HOST_ADDRESS_FILE}

[Service]
Type=notify
Environment=PYTHONPATH=/usr/local/lib/cwhost
ExecStart=/usr/bin/python3 -m guest_service --peer-file {HOST_ADDRESS_FILE}
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""
BASE_FILES.update(GUEST_SERVICE_FILES)
BASE_FILES["etc/systemd/system/cwhost-guest.service"] = GUEST_SERVICE_UNIT

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
After=network-online.target cwhost-seed.service
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

EXECUTABLES = (
    "usr/local/lib/cwhost/desktop-session",
    "usr/local/lib/cwhost/report-ready",
    "usr/local/lib/cwhost/apply-seed",
)
