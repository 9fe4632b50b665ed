#!/bin/sh
# Build what the network boot tests boot: a Linux kernel from Debian's linux-image-amd64 and a
# small busybox initramfs whose /init prints a marker on the serial console and powers off.
#
#   tests/support/netboot-kit.sh DIR     -> DIR/kernel, DIR/initramfs.cpio
#
# Idempotent: nothing is rebuilt when both files exist. Needs apt-get, dpkg-deb and cpio.
set -eu
dir=$1
[ -s "$dir/kernel" ] && [ -s "$dir/initramfs.cpio" ] && exit 0
mkdir -p "$dir"
# Tests run in parallel: one builds, the others wait for it and find the files.
exec 9>"$dir/.lock"
flock 9
[ -s "$dir/kernel" ] && [ -s "$dir/initramfs.cpio" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0777 "$work"
kernel_package=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)
[ -n "$kernel_package" ] || { echo "netboot-kit: cannot resolve linux-image-amd64" >&2; exit 1; }
cd "$work"
if ! apt-get download -q "$kernel_package" busybox-static >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1 || true
    apt-get download -q "$kernel_package" busybox-static
fi
for deb in ./*.deb; do dpkg-deb -x "$deb" extracted; done
cp extracted/boot/vmlinuz-* "$dir/kernel.new"
mkdir -p root/bin root/dev root/proc root/sys
cp extracted/bin/busybox root/bin/busybox
cat > root/init <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
marker=$(/bin/busybox sed -n 's/.*confluent_marker=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "CONFLUENT-NETBOOT-REACHED-INITRAMFS marker=$marker" > /dev/console
echo "CONFLUENT-NETBOOT-REACHED-INITRAMFS marker=$marker" > /dev/ttyS0 2>/dev/null
/bin/busybox sleep 1
/bin/busybox poweroff -f
INIT
chmod 0755 root/init
(cd root && find . | cpio --quiet -o -H newc) > "$dir/initramfs.cpio.new"
mv "$dir/kernel.new" "$dir/kernel"
mv "$dir/initramfs.cpio.new" "$dir/initramfs.cpio"
echo "netboot-kit: $(basename "$kernel_package") kernel and a busybox initramfs in $dir"
