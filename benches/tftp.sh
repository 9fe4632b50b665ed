#!/usr/bin/env bash
# TFTP benchmark (issue 7): confluentd --tftp against tftpd-hpa (in.tftpd) serving the same
# files, with atftp as the client in a second network namespace over a veth pair.
#
# Usage (root): benches/tftp.sh [CONFLUENTD]    (default: $CARGO_TARGET_DIR or target, release)
#   REPS=5 MANY_REPS=3 CONCURRENT=500 WINDOWS="1 4 16" MANY_WINDOWS="1 4" benches/tftp.sh
#
# (1) A 32 MB file with blksize 1468 and windowsize 1, 4 and 16, REPS runs each, median wall
# time (tftpd-hpa has no windowsize: atftp asks for it and falls back to 1 when the OACK leaves
# it out). (2) CONCURRENT simultaneous atftp downloads of a 1 MB file with blksize 1468, for
# each windowsize in MANY_WINDOWS (1: no windowsize option, the same protocol for both
# servers; 4: what UEFI firmware asks for), total wall time, MANY_REPS runs, median;
# every copy is checked against the original's SHA-256 and counted as a failure if it differs
# or atftp failed. Also the server's CPU time for such a run (cpuacct cgroup, children
# included). Clients and servers share the machine's cores, as they do here.
# Not part of CI. Needs atftp and tftpd-hpa (apt-get install -y atftp tftpd-hpa; the package's
# own service is stopped if it runs, since this script starts in.tftpd itself).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "benches/tftp.sh: run as root (namespaces, port 69)" >&2; exit 1; }
for tool in atftp in.tftpd ip sha256sum; do
    command -v "$tool" >/dev/null || { echo "benches/tftp.sh: missing $tool (apt-get install -y atftp tftpd-hpa iproute2)" >&2; exit 1; }
done
target=${CARGO_TARGET_DIR:-target}
confluentd=${1:-$target/release/confluentd}
[ -x "$confluentd" ] || { echo "benches/tftp.sh: build first: cargo build --release --bin confluentd" >&2; exit 1; }
reps=${REPS:-5}
many_reps=${MANY_REPS:-3}
many_windows=${MANY_WINDOWS:-"1 4"}
concurrent=${CONCURRENT:-500}
windows=${WINDOWS:-"1 4 16"}

# Installing tftpd-hpa may have started its service in the root namespace; it would not
# disturb the namespaces below, but this benchmark promises not to leave it running.
if [ -x /etc/init.d/tftpd-hpa ]; then /etc/init.d/tftpd-hpa stop >/dev/null 2>&1 || true; fi

. benches/support/lab.sh
tag=t$$
work=$(mktemp -d /dev/shm/cftftp.XXXXXX)
cgroup=/sys/fs/cgroup/cpuacct/cftftp-$tag
chmod 755 "$work"
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rmdir "$cgroup" 2>/dev/null || true
    lab_down
    rm -rf "$work"
}
trap cleanup EXIT

lab_up tftp 10.91.0.1/24 10.91.0.2/24

# The files, served from a directory both servers can read (in.tftpd runs as user tftp).
files=$work/files
mkdir -p "$files" "$work/out"
head -c $((32 << 20)) /dev/urandom > "$files/big.bin"
head -c $((1 << 20)) /dev/urandom > "$files/1m.bin"
chmod 755 "$files"; chmod 644 "$files"/*
big_sum=$(sha256sum < "$files/big.bin" | cut -d' ' -f1)
small_sum=$(sha256sum < "$files/1m.bin" | cut -d' ' -f1)

now() { date +%s.%N; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# One 32 MB fetch with windowsize $1 -> seconds (fails the script if the copy differs).
fetch_big() {
    local out=$work/out/big.bin start end
    rm -f "$out"
    start=$(now)
    ip netns exec "$cli" atftp --option "blksize 1468" --option "tsize 0" --option "windowsize $1" \
        -g -r big.bin -l "$out" 10.91.0.1 69 >/dev/null 2>&1
    end=$(now)
    [ "$(sha256sum < "$out" | cut -d' ' -f1)" = "$big_sum" ] || { echo "32 MB copy differs" >&2; exit 1; }
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}

# CPU seconds used by the server so far, children included (in.tftpd forks one per transfer
# and does not wait for them, so /proc/PID/stat would miss them): a cpuacct cgroup (v1) holds
# the server and everything it forks.
enter_cgroup() { mkdir -p "$cgroup" && echo "$server_pid" > "$cgroup/cgroup.procs"; }
cpu_seconds() { awk '{ printf "%.2f\n", $1 / 1e9 }' "$cgroup/cpuacct.usage"; }

# CONCURRENT simultaneous 1 MB fetches with windowsize $1 (1: no windowsize option)
# -> "seconds failures server_cpu_seconds".
fetch_many() {
    local window_option=
    [ "$1" = 1 ] || window_option="--option 'windowsize $1'"
    rm -rf "$work/out/many"; mkdir -p "$work/out/many"
    local start end failures cpu_before cpu_after
    cpu_before=$(cpu_seconds)
    start=$(now)
    ip netns exec "$cli" bash -c '
        for i in $(seq '"$concurrent"'); do
            atftp --option "blksize 1468" '"$window_option"' -g -r 1m.bin -l "'"$work"'/out/many/$i" 10.91.0.1 69 >/dev/null 2>&1 \
                || echo failed > "'"$work"'/out/many/$i.failed" &
        done
        wait'
    end=$(now)
    cpu_after=$(cpu_seconds)
    failures=0
    for i in $(seq "$concurrent"); do
        if [ -e "$work/out/many/$i.failed" ] || [ ! -e "$work/out/many/$i" ] \
            || [ "$(sha256sum < "$work/out/many/$i" | cut -d' ' -f1)" != "$small_sum" ]; then
            failures=$((failures + 1))
        fi
    done
    awk -v a="$start" -v b="$end" -v f="$failures" -v c="$(awk -v x="$cpu_before" -v y="$cpu_after" 'BEGIN { print y - x }')" \
        'BEGIN { printf "%.3f %d %.2f\n", b - a, f, c }'
}

declare -A result
measure() {
    local name=$1 w times
    sleep 0.5
    fetch_big 1 >/dev/null  # warm-up, not counted
    for w in $windows; do
        times=$(for _ in $(seq "$reps"); do fetch_big "$w"; done)
        result[$name,w$w]=$(echo "$times" | median)
        echo "  $name windowsize $w: $(echo $times) -> median ${result[$name,w$w]} s" >&2
    done
    local runs
    for w in $many_windows; do
        runs=$(for _ in $(seq "$many_reps"); do fetch_many "$w"; done)
        echo "  $name $concurrent x 1 MB, windowsize $w (seconds failures cpu):" $runs >&2
        # Median time and CPU, failures summed over the runs.
        result[$name,many$w]="$(echo "$runs" | awk '{print $1}' | median) $(echo "$runs" | awk '{f += $2} END {print f}') $(echo "$runs" | awk '{print $3}' | median)"
    done
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# --- tftpd-hpa: foreground (-L), chrooted into the files (-s), on the server address ---
ip netns exec "$srv" in.tftpd -L -s "$files" -a 10.91.0.1:69 &
server_pid=$!
enter_cgroup
sleep 0.5
measure tftpd-hpa
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=

# --- confluentd ---
state=$work/confluent
mkdir -p "$state/lib/tftpboot"
cp "$files"/*.bin "$state/lib/tftpboot/"
ip netns exec "$srv" "$confluentd" --state-dir "$state" --http off --https off --tls-socket off \
    --log-level warn --tftp 10.91.0.1:69 2>"$work/confluentd.log" &
server_pid=$!
enter_cgroup
for _ in $(seq 100); do [ -S "$state/run/api.sock" ] && break; sleep 0.1; done
measure confluentd
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo
echo "| transfer | tftpd-hpa | confluentd | confluentd speed-up |"
echo "|---|---|---|---|"
for w in $windows; do
    a=${result[tftpd-hpa,w$w]}; b=${result[confluentd,w$w]}
    awk -v w="$w" -v a="$a" -v b="$b" 'BEGIN {
        printf "| 32 MB, blksize 1468, windowsize %s (median of '"$reps"') | %.3f s (%.1f MB/s) | %.3f s (%.1f MB/s) | %.2fx |\n",
            w, a, 32 / a, b, 32 / b, a / b }'
done
for w in $many_windows; do
    read -r a af ac <<<"${result[tftpd-hpa,many$w]}"
    read -r b bf bc <<<"${result[confluentd,many$w]}"
    awk -v w="$w" -v a="$a" -v b="$b" -v af="$af" -v bf="$bf" -v ac="$ac" -v bc="$bc" 'BEGIN {
        printf "| '"$concurrent"' concurrent x 1 MB, blksize 1468, windowsize %s (median of '"$many_reps"', failures summed) | %.3f s, %d failed | %.3f s, %d failed | %.2fx |\n",
            w, a, af, b, bf, a / b
        printf "| server CPU time, one such run (median) | %.2f s | %.2f s | %.2fx less CPU |\n", ac, bc, (bc > 0) ? ac / bc : 0 }'
done
