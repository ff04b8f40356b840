#!/usr/bin/env bash
# Build a tiny bootable guest from Debian packages alone: the kernel of
# linux-image-amd64 and an initramfs of busybox-static running ./init.
# Usage: build-guest.sh OUTDIR   (writes OUTDIR/vmlinuz and OUTDIR/initrd.img)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

kernel_package=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
apt-get download -qq "$kernel_package" busybox-static 2>/dev/null
dpkg-deb -x linux-image-*.deb kernel
dpkg-deb -x busybox-static_*.deb busybox

mkdir -p root/bin root/dev root/proc root/sys root/lib/modules root/etc/acpi/PWRF
cp busybox/bin/busybox root/bin/busybox
cp kernel/lib/modules/*/kernel/drivers/input/evdev.ko root/lib/modules/
cp kernel/lib/modules/*/kernel/drivers/acpi/button.ko root/lib/modules/
install -m 0755 "$here/init" root/init
printf '#!/bin/sh\npoweroff -f\n' > root/etc/acpi/PWRF/00000080
chmod 0755 root/etc/acpi/PWRF/00000080
(cd root && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.img"
cp kernel/boot/vmlinuz-* "$out/vmlinuz"
chmod 0644 "$out/vmlinuz" "$out/initrd.img"
