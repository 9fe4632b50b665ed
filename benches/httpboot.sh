#!/usr/bin/env bash
# HTTP boot file serving benchmark (issue 7): confluentd's /confluent-public/ against nginx
# serving the same directory, side by side, over a veth pair between two namespaces.
#
# Usage (root): benches/httpboot.sh [CONFLUENTD]   (default: ${CARGO_TARGET_DIR:-target}/release/confluentd)
#   REPEAT=5 SECONDS_PER_RUN=10 CONNECTIONS="200 1000" benches/httpboot.sh
#
# (1) one 200 MB file with curl, median of REPEAT downloads; (2) a 64 KB file with wrk at each
# connection count in CONNECTIONS (keep-alive), requests/s and p99 latency. Ratios are
# confluentd / nginx (higher is better for throughput).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "benches/httpboot.sh: run as root (namespaces)" >&2; exit 1; }
for tool in nginx wrk curl ip; do
    command -v "$tool" >/dev/null || { echo "benches/httpboot.sh: missing $tool (apt-get install -y nginx-light wrk curl iproute2)" >&2; exit 1; }
done
target=${CARGO_TARGET_DIR:-target}
confluentd=${1:-$target/release/confluentd}
[ -x "$confluentd" ] || { echo "benches/httpboot.sh: build first: cargo build --release --bin confluentd" >&2; exit 1; }
repeat=${REPEAT:-5}
seconds=${SECONDS_PER_RUN:-10}
connections=${CONNECTIONS:-"200 1000"}

. benches/support/lab.sh
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    lab_down
    rm -rf "$work"
}
trap cleanup EXIT
lab_up http 10.91.0.1/24 10.91.0.2/24

state=$work/state
files=$state/lib/public/os/bench/boot
mkdir -p "$files"
head -c 200000000 /dev/urandom > "$files/big.bin"
head -c 65536 /dev/urandom > "$files/small.bin"
echo "label: bench" > "$state/lib/public/os/bench/profile.yaml"

cat > "$work/nginx.conf" <<NGINX
user root;
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx-body;
    proxy_temp_path $work/nginx-proxy;
    fastcgi_temp_path $work/nginx-fastcgi;
    uwsgi_temp_path $work/nginx-uwsgi;
    scgi_temp_path $work/nginx-scgi;
    server {
        listen 10.91.0.1:8081;
        location /confluent-public/ { alias $state/lib/public/; }
    }
}
NGINX
ip netns exec "$srv" nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
ip netns exec "$srv" "$confluentd" --state-dir "$state" --log-level warn \
    --http 10.91.0.1:8080 --https off --tls-socket off &
pids+=($!)
for port in 8080 8081; do
    for _ in $(seq 100); do
        ip netns exec "$cli" curl -sf -o /dev/null "http://10.91.0.1:$port/confluent-public/os/bench/boot/small.bin" && break
        sleep 0.1
    done
done
# Warm the page cache.
cat "$files/big.bin" > /dev/null

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
big() {
    for _ in $(seq "$repeat"); do
        ip netns exec "$cli" curl -s -o /dev/null -w '%{time_total}\n' "http://10.91.0.1:$1/confluent-public/os/bench/boot/big.bin"
    done | median
}
# wrk CONNECTIONS PORT -> "requests/s p99_ms"
small() {
    local out
    out=$(ip netns exec "$cli" wrk -t2 -c"$1" -d"${seconds}s" --latency "http://10.91.0.1:$2/confluent-public/os/bench/boot/small.bin")
    echo "$out" > "$work/wrk-$1-$2.txt"
    local rps p99 errors
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}')
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
    echo "$rps $p99 ${errors:-none}"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
c_big=$(big 8080); n_big=$(big 8081)
printf '\n200 MB file (curl, median of %s)\n' "$repeat"
printf '  %-12s %8s s  %8.0f MB/s\n' confluentd "$c_big" "$(echo "200 / $c_big" | bc -l)"
printf '  %-12s %8s s  %8.0f MB/s\n' nginx "$n_big" "$(echo "200 / $n_big" | bc -l)"
printf '  ratio (confluentd throughput / nginx): %.2f\n' "$(echo "$n_big / $c_big" | bc -l)"
for count in $connections; do
    read -r c_rps c_p99 c_err <<<"$(small "$count" 8080)"
    read -r n_rps n_p99 n_err <<<"$(small "$count" 8081)"
    printf '\n64 KB file, %s connections, wrk %ss\n' "$count" "$seconds"
    printf '  %-12s %10s req/s  p99 %8s ms  errors: %s\n' confluentd "$c_rps" "$c_p99" "$c_err"
    printf '  %-12s %10s req/s  p99 %8s ms  errors: %s\n' nginx "$n_rps" "$n_p99" "$n_err"
    printf '  ratio (confluentd / nginx): %.2f\n' "$(echo "$c_rps / $n_rps" | bc -l)"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
