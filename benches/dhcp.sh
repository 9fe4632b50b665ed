#!/usr/bin/env bash
# DHCP benchmark (issue 6): perfdhcp (Kea's load generator, package kea-admin) against
# confluentd --dhcp, kea-dhcp4 (memfile) and dnsmasq, same subnet and pool, same run.
#
# Usage (root): benches/dhcp.sh [CONFLUENTD]     (default: $CARGO_TARGET_DIR or target, release)
#   RATES="4000 8000 12000" SECONDS_PER_RUN=10 CLIENTS=30000 NODES=0 benches/dhcp.sh
#
# For each server: (1) a fixed 4,000 exchanges/s run, reporting drops and the server's CPU time
# (utime+stime from /proc) per 1,000 4-way exchanges; (2) each rate in RATES, reporting the
# achieved 4-way exchange rate and drop ratio. Two namespaces joined by a veth pair; perfdhcp
# acts as a relay (giaddr = its own address) as it always does.
#
# perfdhcp receives the replies for all its simulated clients on one socket. With the default
# 208 KB receive buffer, a burst of replies that arrives while perfdhcp is not scheduled
# overflows it, and perfdhcp counts those replies as drops although the server sent them (real
# clients each have their own socket). The script therefore raises net.core.rmem_default to
# 4 MB for its duration (restored at exit; it applies to every server alike) and reports the
# client socket's overflows (Udp RcvbufErrors in the client namespace) for every run.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "benches/dhcp.sh: run as root (namespaces, port 67)" >&2; exit 1; }
for tool in perfdhcp kea-dhcp4 dnsmasq ip; do
    command -v "$tool" >/dev/null || { echo "benches/dhcp.sh: missing $tool (apt-get install -y kea-admin kea-dhcp4-server dnsmasq-base iproute2)" >&2; exit 1; }
done
target=${CARGO_TARGET_DIR:-target}
confluentd=${1:-$target/release/confluentd}
confluent=$(dirname "$confluentd")/confluent
[ -x "$confluentd" ] || { echo "benches/dhcp.sh: build first: cargo build --release --bins" >&2; exit 1; }
rates=${RATES:-"4000 6000 8000 10000 12000 16000"}
seconds=${SECONDS_PER_RUN:-10}
clients=${CLIENTS:-30000}
nodes=${NODES:-0}

. benches/support/lab.sh
work=$(mktemp -d)
out_dir=${OUT_DIR:-$work}
mkdir -p "$out_dir"
server_pid=
rmem_default=$(sysctl -n net.core.rmem_default)
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    lab_down
    sysctl -qw net.core.rmem_default="$rmem_default"
    rm -rf "$work"
}
trap cleanup EXIT
[ "$rmem_default" -ge 4194304 ] || sysctl -qw net.core.rmem_default=4194304

lab_up dhcp 10.90.0.1/16 10.90.0.2/16

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

client_overflows() { ip netns exec "$cli" awk '/^Udp:/ { n++ } /^Udp:/ && n == 2 { print $6 }' /proc/net/snmp; }

# perfdhcp RATE -> "achieved_rate drops_ratio_percent client_overflows"
load() {
    local out overflows_before
    overflows_before=$(client_overflows)
    out=$(ip netns exec "$cli" perfdhcp -4 -l "$cif" -r "$1" -p "$seconds" -R "$clients" 10.90.0.1 2>&1 || true)
    echo "$out" > "$out_dir/perfdhcp-$server_name-$1.txt"
    local rate sent received
    rate=$(echo "$out" | awk '/^Rate:/ {print $2; exit}')
    # 4-way: perfdhcp's drops over both exchanges (DISCOVER-OFFER and REQUEST-ACK).
    sent=$(echo "$out" | awk '/^sent packets:/ {s += $3} END {print s + 0}')
    drops=$(echo "$out" | awk '/^drops:/ {s += $2} END {print s + 0}')
    awk -v rate="${rate:-0}" -v sent="$sent" -v drops="$drops" -v o=$(($(client_overflows) - overflows_before)) \
        'BEGIN { d = (sent > 0) ? 100 * drops / sent : 100; printf "%.0f %.3f %d\n", rate, d, o }'
}

measure() {
    local name=$1
    server_name=$2
    sleep 1
    local before after achieved drops overflows
    before=$(cpu_ticks "$server_pid")
    read -r achieved drops overflows < <(load 4000)
    after=$(cpu_ticks "$server_pid")
    local cpu_ms_per_1000
    cpu_ms_per_1000=$(awk -v t=$((after - before)) -v hz="$ticks_per_second" -v r="$achieved" -v s="$seconds" \
        'BEGIN { n = r * s; printf "%.1f", (n > 0) ? (1000 * (t / hz) * 1000 / n) : 0 }')
    echo "| $name | fixed 4000/s | $achieved | $drops % | $overflows | $cpu_ms_per_1000 ms |"
    local best=0
    for rate in $rates; do
        read -r achieved drops overflows < <(load "$rate")
        echo "| $name | $rate/s | $achieved | $drops % | $overflows | |"
        if awk -v d="$drops" 'BEGIN { exit !(d < 0.1) }'; then best=$achieved; fi
    done
    echo "| $name | **best with < 0.1 % drops** | **$best** | | | |"
}

echo "| server | offered | 4-way exchanges/s | drops | client buffer overflows | CPU per 1,000 exchanges |"
echo "|---|---|---|---|---|---|"

# --- confluentd ---
state=$work/confluent
mkdir -p "$state"
ip netns exec "$srv" "$confluentd" --state-dir "$state" --http off --https off --tls-socket off \
    --log-level warn --dhcp "$sif=full" 2>"$work/confluentd.log" &
server_pid=$!
for _ in $(seq 100); do [ -S "$state/run/api.sock" ] && break; sleep 0.1; done
if [ "$nodes" -gt 0 ]; then
    # Reservations outside the pool, so they cost lookups but do not shrink the pool.
    CONFLUENT_HOST=$state/run/api.sock "$confluent" nodedefine "r[1-$nodes]" \
        'net.hwaddr=02:00:00:{n1//65536%256:02x}:{n1//256%256:02x}:{n1%256:02x}' \
        'net.ipv4_address=10.90.{n1//256%128}.{n1%256}' >/dev/null
fi
measure "confluentd ($nodes reservations)" confluentd
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=

# --- kea-dhcp4, memfile ---
mkdir -p "$work/kea"
cat > "$work/kea/kea-dhcp4.conf" <<EOF
{ "Dhcp4": {
    "interfaces-config": { "interfaces": [ "$sif" ] },
    "lease-database": { "type": "memfile", "persist": true, "name": "$work/kea/leases.csv", "lfc-interval": 3600 },
    "valid-lifetime": 3600,
    "subnet4": [ { "id": 1, "subnet": "10.90.0.0/16", "pools": [ { "pool": "10.90.128.0 - 10.90.255.254" } ] } ],
    "loggers": [ { "name": "kea-dhcp4", "output_options": [ { "output": "$work/kea/kea.log" } ], "severity": "WARN" } ]
} }
EOF
ip netns exec "$srv" env KEA_PIDFILE_DIR="$work/kea" KEA_LOCKFILE_DIR="$work/kea" \
    kea-dhcp4 -c "$work/kea/kea-dhcp4.conf" >"$work/kea/stdout.log" 2>&1 &
server_pid=$!
sleep 2
measure "kea-dhcp4 2.2 (memfile)" kea
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=

# --- dnsmasq: same subnet and pool, no ping check, a lease limit above the pool, leases on disk ---
mkdir -p "$work/dnsmasq"
ip netns exec "$srv" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --bind-interfaces \
    --interface="$sif" --dhcp-range=10.90.128.0,10.90.255.254,255.255.0.0,1h --no-ping \
    --dhcp-lease-max=200000 --dhcp-leasefile="$work/dnsmasq/leases" \
    --pid-file="$work/dnsmasq/pid" >"$work/dnsmasq/stdout.log" 2>&1 &
server_pid=$!
sleep 2
measure "dnsmasq $(dnsmasq --version | awk 'NR == 1 {print $3}')" dnsmasq
