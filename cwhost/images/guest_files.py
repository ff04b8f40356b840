"""Files every image gets on top of its packages: the boot, the network, the seed, readiness, the guest agent
and the guest service (the desktop, browser and sound of the types that have them: desktop_files)."""

from __future__ import annotations

from pathlib import Path

import drivers.guest_service
from cwhost.images import seed_applier
from drivers.libvirt.cloud_init import HOST_ADDRESS_FILE, READINESS_FILE
from drivers.libvirt.domain_xml import FORWARDING_MAC, GUEST_AGENT_CHANNEL

# The kernel boots the image's one file system directly: no partition table,
# no boot loader. The seed applier grows the file system to the disk at each boot.
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0"

# The forwarding NIC, known by its MAC (not renamed: a rename is a second
# round of udev's work that networkd waits for, seconds under TCG): the
# address QEMU forwards to, and no route of the main
# table, so the guest's own traffic never goes out by it. A forwarded
# connection arrives with its real peer's address (a LAN host, another
# guest), which the main table would answer through eth0, where it is lost:
# so what is sent from 10.0.2.15 (the answers to forwarded connections) takes
# a table of its own, back through QEMU (so even a strict reverse-path filter
# passes them). No IPv6: QEMU's router advertisement would give a default
# route that goes nowhere. systemd-networkd sets it up as soon as udev has
# seen the NIC, and network.target never waits for a DHCP lease (sshd is
# ordered after it).
FORWARDS_NETWORK = f"""[Match]
MACAddress={FORWARDING_MAC}

[Network]
Address=10.0.2.15/24
LinkLocalAddressing=no
IPv6AcceptRA=no

[Route]
Gateway=10.0.2.2
Table=15

[RoutingPolicyRule]
From=10.0.2.15
Table=15
Priority=1500
"""
# The routed NIC, on libvirt's network (every Ethernet NIC but the one above, whose
# file comes first): DHCP gives it its address, its route and DNS (systemd-resolved).
# IPv4 only, as the network is (its traffic filter drops IPv6): a link-local address
# and router solicitations would only hold the link in "configuring", which
# network-online.target (the guest service's, so readiness's) waits out.
# The hostname is the seed's: networkd would otherwise start hostnamed over D-Bus
# at each boot to set DHCP's, and be refused.
ROUTED_NETWORK = """[Match]
Type=ether

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
UseHostname=no
"""

# What this boot has passed, and when (seconds since the kernel started), for
# cwhost to read through the guest agent (READINESS_FILE): each phase the
# guest has, in the order passed, and ready once all are. Nothing polls
# systemd: each phase's process waits in `systemctl start` on the start job
# the boot already queued for its unit, so a boot that hangs still says how
# far it got, and the report costs a few processes, not a stream of them
# taken from the boot it watches (under TCG each costs a tenth of a second).
REPORT_READY = rf"""#!/bin/sh
export LC_ALL=C
report=${{CWHOST_READY_FILE:-{READINESS_FILE}}}
mkdir -p "${{report%/*}}"
passed_list="$report.passed"
: > "$passed_list"
seconds() {{ printf '%d.%03d' $(($1 / 1000000)) $(($1 / 1000 % 1000)); }}
uptime() {{ read -r up _ < /proc/uptime && echo "$up"; }}
# One phase passed at a time (the phases' processes run side by side), and the whole report rewritten.
passed() {{
    (
        flock 9
        echo "$1 $2" >> "$passed_list"
        [ "$1" = ready ] && ready=true || ready=false
        phases=$(sort -s -n -k 2 "$passed_list" | while read -r name at; do printf ',["%s",%s]' "$name" "$at"; done)
        printf '{{"ready":%s,"phases":[%s]}}\n' "$ready" "${{phases#,}}" > "$report.tmp" && mv "$report.tmp" "$report"
    ) 9>> "$report.lock"
}}
# The phase named $1 has passed once its unit $2 is up; one that fails is started again, now and then.
await() {{
    until systemctl start "$2" 2>/dev/null; do sleep 10; done
    at=$(systemctl show -p ActiveEnterTimestampMonotonic --value "$2")
    if [ "${{at:-0}}" != 0 ]; then passed "$1" "$(seconds "$at")"; else passed "$1" "$(uptime)"; fi
}}
# Chromium's DevTools answer (devtools-answer: at the first answer, however long the busy
# browser takes), behind the relay that takes them to the NIC.
devtools() {{
    until systemctl start cwhost-cdp-relay.service 2>/dev/null; do sleep 10; done
    /usr/local/lib/cwhost/devtools-answer
    passed devtools "$(uptime)"
}}
passed kernel "$(seconds "$(systemctl show -p UserspaceTimestampMonotonic --value)")"
await sshd ssh.service &
await first-boot cwhost-seed.service
# What else this guest has, its seed now applied: a workspace to mount, and on cwhost's network the
# address DHCP gives (where the host reaches the guest), DevTools to relay and the guest service.
workspace=$(cd /etc/systemd/system && ls home-*-workspace.mount 2>/dev/null | head -n 1)
[ -n "$workspace" ] && await workspace "$workspace" &
if [ -f {HOST_ADDRESS_FILE} ]; then
    await network network-online.target &
    [ -f /etc/systemd/system/cwhost-cdp-relay.service ] && devtools &
    [ -f /etc/systemd/system/cwhost-guest.service ] && await service cwhost-guest.service &
fi
wait
passed ready "$(uptime)"
"""

# Units a workstation never needs, masked: Debian's guest agent unit
# (cwhost-guest-agent.service starts it sooner); timers that would run apt or
# scrub the disk on a metered machine, and their boot-time parts; ifupdown,
# which Debian installs as an important package, whose boot would wait for
# udev to settle and for DHCP before network.target (systemd-networkd does its
# work); and systemd's partition grower (the image has no partitions) and EFI
# crash-log saver (the guest boots without EFI), which each had their kernel
# modules loaded again and again at boot (six processes of TCG's time).
MASKED_UNITS = (
    "qemu-guest-agent.service",
    "systemd-repart.service",
    "systemd-pstore.service",
    "networking.service",
    "ifupdown-pre.service",
    "ifupdown-wait-online.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "man-db.timer",
)

# Early, beside the rest of sysinit (no default dependencies): the root file
# system, remounted as fstab says, and /etc's users are all it needs, not
# local-fs.target, which waits for the workspace's virtiofs mount on a
# relaunch; it finds the seed's disk itself (seed_applier.seed_device).
# Before sshd, which needs the host key and the user, and before the DevTools
# relay, which needs the host's address. A seed that cannot be applied fails
# this unit, and the workstation never says it is ready.
SEED_UNIT = r"""[Unit]
Description=Apply cwhost's seed: hostname, user, SSH keys, host key, files
DefaultDependencies=no
After=systemd-remount-fs.service systemd-sysusers.service
RequiresMountsFor=/home /var/lib
Before=ssh.service systemd-user-sessions.service cwhost-cdp-relay.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/cwhost/apply-seed

[Install]
WantedBy=multi-user.target
"""

# While the machine boots, what readiness waits on has ten times the CPU share
# of the rest (udev's coldplug, journald, logind): under TCG a boot is bound by
# the CPU, and this is what a client waits for. sshd is ordered after
# network.target, which waits for networkd and resolved; the guest agent carries
# the report. A browser type's display is on the path too (DESKTOP_FILES). The
# weights lapse once the boot is over.
BOOT_PRIORITY_UNITS = (
    "cwhost-seed.service",
    "cwhost-ready.service",
    "cwhost-guest-agent.service",
    "cwhost-guest.service",
    "ssh.service",
    "systemd-networkd.service",
    "systemd-resolved.service",
)


def boot_priority(unit: str) -> tuple[str, str]:
    """The drop-in that gives ``unit`` its boot-time CPU weight: (path in the image, text)."""
    return f"etc/systemd/system/{unit}.d/cwhost-boot-priority.conf", "[Service]\nStartupCPUWeight=1000\n"


# Debian's sshd runs once to test its configuration, then again to serve: the image's configuration
# is cwhost's, and a broken one still fails sshd, with its reason in the journal.
SSHD_AT_ONCE = "[Service]\nExecStartPre=\n"

# The guest agent, through which cwhost reads readiness, runs commands and
# learns addresses, started early on its port, found by name in sysfs: the
# initramfs loads virtio_console, so the port's node is there before systemd
# starts. Debian's unit (masked) waits for udev's coldplug to name the port
# under /dev/virtio-ports, which came 10 s after the guest was ready.
GUEST_AGENT = f"""#!/bin/sh
for port in /sys/class/virtio-ports/*; do
    if [ "$(cat "$port/name" 2>/dev/null)" = {GUEST_AGENT_CHANNEL} ]; then
        exec /usr/sbin/qemu-ga --method=virtio-serial --path="/dev/${{port##*/}}"
    fi
done
echo "no virtio port named {GUEST_AGENT_CHANNEL} yet" >&2
exit 1
"""
GUEST_AGENT_UNIT = """[Unit]
Description=QEMU guest agent, on its port as soon as the kernel has it
DefaultDependencies=no
Conflicts=shutdown.target
Before=shutdown.target

[Service]
ExecStart=/usr/local/lib/cwhost/guest-agent
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""

# Drivers udev's coldplug would load for the machine's devices that no workstation uses: the
# floppy controller, the PC speaker, the SMBus, joysticks, raw serial-port access, and Wi-Fi's
# configuration layer (which networkd's query for Wi-Fi loads). Each costs its load and its
# probe, up to a second of a TCG boot; blacklisted, they still load when named (modprobe), never
# by a device's alias.
UNUSED_DRIVERS = ("floppy", "pcspkr", "i2c_piix4", "joydev", "serio_raw", "cfg80211")

BASE_FILES = {
    "etc/fstab": "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n",
    "etc/modprobe.d/cwhost-unused-drivers.conf": "".join(f"blacklist {name}\n" for name in UNUSED_DRIVERS),
    "etc/systemd/network/20-cwhost-routed.network": ROUTED_NETWORK,
    # The same name in /etc turns off ifupdown's rule, which runs a script for every NIC that appears.
    "etc/udev/rules.d/80-ifupdown.rules": "# systemd-networkd configures the NICs (cwhost).\n",
    # The NIC that only carries forwarded ports in (QEMU's user-mode network, restricted).
    "etc/systemd/network/10-cwhost-forwards.network": FORWARDS_NETWORK,
    "usr/local/lib/cwhost/report-ready": REPORT_READY,
    "usr/local/lib/cwhost/guest-agent": GUEST_AGENT,
    "etc/systemd/system/cwhost-guest-agent.service": GUEST_AGENT_UNIT,
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
    # Standard library only: Python skips site-packages (-I -S), which is quicker to start.
    "usr/local/lib/cwhost/apply-seed": "#!/usr/bin/python3 -IS\n" + Path(seed_applier.__file__).read_text(),
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
# elsewhere it does not run. Ready (notify) once it listens, on every address, which the readiness
# report awaits; it starts while DHCP is still under way, whose address (where the host reaches it)
# the report awaits too (its network phase).
GUEST_SERVICE_UNIT = f"""[Unit]
Description=cwhost's guest service: processes that stream, and files, for the host alone
After=cwhost-seed.service
ConditionPathExists={HOST_ADDRESS_FILE}

[Service]
Type=notify
Environment=PYTHONPATH=/usr/local/lib/cwhost
ExecStart=/usr/bin/python3 -S -m guest_service --peer-file {HOST_ADDRESS_FILE}
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""
BASE_FILES.update(GUEST_SERVICE_FILES)
BASE_FILES["etc/systemd/system/ssh.service.d/cwhost-no-config-test.conf"] = SSHD_AT_ONCE
BASE_FILES.update(boot_priority(unit) for unit in BOOT_PRIORITY_UNITS)
BASE_FILES["etc/systemd/system/cwhost-guest.service"] = GUEST_SERVICE_UNIT

EXECUTABLES = (
    "usr/local/lib/cwhost/report-ready",
    "usr/local/lib/cwhost/guest-agent",
    "usr/local/lib/cwhost/apply-seed",
)
