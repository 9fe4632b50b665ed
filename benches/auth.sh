#!/usr/bin/env bash
# Authentication benchmark (issue 4): HTTPS GET /nodes/<n>/attributes/all with an authenticated
# session over 64 keep-alive connections (wrk), and the slowdown of that load while a storm of
# 1,000 bad logins (for one user, and for 1,000 different unknown users) is under way.
#
# Usage: benches/auth.sh [CONFLUENTD]   (default: $CARGO_TARGET_DIR or target, release)
#   SECONDS_PER_RUN=10 CONNECTIONS=64 THREADS=2 benches/auth.sh
#
# Installs wrk with apt-get when missing (root). Prints requests/s, p50 and p99 per run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "benches/auth.sh: install wrk (apt-get install -y wrk)" >&2; exit 1; }
    apt-get install -y -qq wrk >/dev/null
fi
target=${CARGO_TARGET_DIR:-target}
confluentd=${1:-$target/release/confluentd}
confluent=$(dirname "$confluentd")/confluent
[ -x "$confluentd" ] || { echo "benches/auth.sh: build first: cargo build --release --bins" >&2; exit 1; }
seconds=${SECONDS_PER_RUN:-10}
connections=${CONNECTIONS:-64}
threads=${THREADS:-2}

work=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$confluentd" --state-dir "$work/state" --log-level warn --http off --https 127.0.0.1:0 \
    --tls-socket off >"$work/daemon.log" 2>&1 &
server_pid=$!
for _ in $(seq 200); do [ -S "$work/state/run/api.sock" ] && break; sleep 0.05; done
export CONFLUENT_HOST=$work/state/run/api.sock
port=$(sed -E 's/.*"https":"[^"]*:([0-9]+)".*/\1/' "$work/state/run/listeners.json")
"$confluent" nodedefine "n[1-100]" groups=everything >/dev/null
"$confluent" nodeattrib "n[1-100]" location.rack=1 location.row=A info.note=bench >/dev/null
echo "bench-good-secret" | "$confluent" user add good --role Operator --password-stdin >/dev/null
echo "bench-victim-secret" | "$confluent" user add victim --role Operator --password-stdin >/dev/null
session=$(curl -sk -u good:bench-good-secret "https://127.0.0.1:$port/sessions/current/info" \
    | sed -E 's/.*"sessionid":"([^"]+)".*/\1/')
url="https://127.0.0.1:$port/nodes/n42/attributes/all"

run_wrk() {
    wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -H "ConfluentSession: $session" "$url" \
        | awk -v label="$1" '
            /Requests\/sec/ { rps = $2 }
            /^ +50%/ { p50 = $2 }
            /^ +99%/ { p99 = $2 }
            /Non-2xx/ { errors = $NF }
            END { printf "%-34s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n", label, rps, p50, p99, (errors == "" ? 0 : errors) }'
}

# A storm: 1,000 bad logins, 100 connections at a time, from one process (curl's parallel mode,
# so the storm costs the client machine little), repeated until the measured run ends.
# $1: one user, or 1,000 different (unknown) names.
storm() {
    local config=$work/storm.cfg
    : >"$config"
    for i in $(seq 1000); do
        if [ "$1" = same ]; then user=victim; else user=nobody$i; fi
        # `next`: each URL gets its own options (curl's config files are otherwise global).
        printf 'url = "https://127.0.0.1:%s/nodes/"\nuser = "%s:wrong-password"\noutput = "/dev/null"\nnext\n' \
            "$port" "$user" >>"$config"
    done
    local end=$((SECONDS + seconds)) rounds=0 start
    start=$(date +%s%N)
    while [ "$SECONDS" -lt "$end" ]; do
        curl -sk --no-progress-meter --parallel --parallel-max 100 -K "$config" 2>/dev/null || true
        rounds=$((rounds + 1))
    done
    awk -v r="$rounds" -v ns="$(( $(date +%s%N) - start ))" -v who="$1" \
        'BEGIN { printf "  storm on %s user(s): %d x 1,000 bad logins, %.2f s per 1,000\n", who, r, ns / 1e9 / r }' >&2
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)   cores: $(nproc)"
echo "command: wrk -t$threads -c$connections -d${seconds}s --latency -H 'ConfluentSession: <id>' $url"
run_wrk "session, no storm"
storm same &
storm_pid=$!
run_wrk "session, storm on one user"
wait "$storm_pid"
storm different &
storm_pid=$!
run_wrk "session, storm on 1,000 users"
wait "$storm_pid"
run_wrk "session, no storm (again)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
