#!/usr/bin/env bash
# Boot storm (issue 7): N simulated PXE machines (examples/bootstorm.rs) boot at once from
# confluentd: DHCP DORA through a relay address, TFTP fetch of undionly.kpxe, then over HTTP the
# per-node iPXE script, the kernel and the initrd of the pending profile (a Debian kernel and a
# busybox initramfs from tests/support/netboot-kit.sh). Two namespaces joined by a veth pair.
#
# Usage (root): MACHINES=2000 benches/bootstorm.sh [TARGET_DIR]
#   (TARGET_DIR default ${CARGO_TARGET_DIR:-target}/release, holding confluentd, confluent and
#   examples/bootstorm: cargo build --release --bins --example bootstorm)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "benches/bootstorm.sh: run as root" >&2; exit 1; }
bin=${1:-${CARGO_TARGET_DIR:-target}/release}
machines=${MACHINES:-2000}
for file in "$bin/confluentd" "$bin/confluent" "$bin/examples/bootstorm"; do
    [ -x "$file" ] || { echo "benches/bootstorm.sh: missing $file (cargo build --release --bins --example bootstorm)" >&2; exit 1; }
done

. benches/support/lab.sh
work=$(mktemp -d)
daemon=
# The simulator takes the DHCP replies of all its machines on one socket (real machines each have
# their own): with the default 208 KB buffer, replies arriving while it is not scheduled overflow
# it and those machines retransmit after 1, 2, 4 s. As in benches/dhcp.sh, the default receive
# buffer is 4 MB for the run (restored at exit); RMEM_DEFAULT=keep leaves it alone.
rmem_default=$(sysctl -n net.core.rmem_default)
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    lab_down
    sysctl -qw net.core.rmem_default="$rmem_default"
    rm -rf "$work"
}
trap cleanup EXIT
if [ "${RMEM_DEFAULT:-}" != keep ] && [ "$rmem_default" -lt 4194304 ]; then
    sysctl -qw net.core.rmem_default=4194304
fi
lab_up storm 10.92.0.1/16 10.92.0.2/16

state=$work/state
kit=${CONFLUENT_NETBOOT_KIT:-/var/cache/confluent-tests/netboot}
tests/support/netboot-kit.sh "$kit" >/dev/null
profile=$state/lib/public/os/storm
mkdir -p "$profile/boot/initramfs"
cp "$kit/kernel" "$profile/boot/kernel"
cp "$kit/initramfs.cpio" "$profile/boot/initramfs/test.cpio"
echo "kernelargs: console=ttyS0 quiet" > "$profile/profile.yaml"
bootloaders/install.sh --only ipxe "$state/lib/tftpboot" >/dev/null

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ip netns exec "$srv" "$bin/confluentd" --state-dir "$state" --log-level warn \
    --http 10.92.0.1:8080 --https off --tls-socket off --dhcp "$sif=full" 2>"$work/confluentd.log" &
daemon=$!
for _ in $(seq 100); do [ -S "$state/run/api.sock" ] && break; sleep 0.1; done
CONFLUENT_HOST=$state/run/api.sock "$bin/confluent" nodedefine "m[1-$machines]" \
    'net.eth0.hwaddr=02:10:{n1//65536%256:02x}:{n1//256%256:02x}:{n1%256:02x}:01' \
    'net.eth0.ipv4_address=10.92.{1+n1//250}.{n1%250+1}' \
    deployment.pendingprofile=storm deployment.useinsecureprotocols=firmware >/dev/null
sleep 1
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
ticks() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
before=$(ticks)
BOOTSTORM_HTTP_PORT=8080 ip netns exec "$cli" "$bin/examples/bootstorm" \
    --server 10.92.0.1 --relay 10.92.0.2 --machines "$machines" --mac-prefix 02:10
after=$(ticks)
echo "confluentd CPU: $(( (after - before) * 1000 / $(getconf CLK_TCK) )) ms"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
