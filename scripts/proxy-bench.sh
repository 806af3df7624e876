#!/usr/bin/env bash
# Balancer vs Nginx: the same load through each, in one run, against one
# chat server (release build, SQLite): keep-alive chat traffic (chatbench
# ping-pong, 100 pairs, v1) and new-connection rate (connect, PING, PONG,
# close). Nginx runs as many workers as the balancer has runtime threads.
# Prints one line per case and the balancer/Nginx ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
. scripts/services.sh
ensure_nginx
cargo build --release -q -p chatserver -p balancer -p chatbench
THREADS=${THREADS:-$(nproc)}
RUNS=${RUNS:-3}
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_line() { for _ in $(seq 1 200); do grep -q "^listening on" "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "no ready line in $1" >&2; exit 1; }

(cd "$dir" && exec "$OLDPWD/target/release/chatserver" 127.0.0.1 0 --hash-memory-kib 64 --hash-iterations 1 >server.out 2>server.log) &
pids+=($!); server_pid=$!
wait_line "$dir/server.out"
backend=$(sed -n 's/^listening on //p' "$dir/server.out")

cat >"$dir/lb.toml" <<TOML
listen = "127.0.0.1:0"
[health]
kind = "tcp"
[[backend]]
address = "$backend"
TOML
TOKIO_WORKER_THREADS=$THREADS target/release/balancer --config "$dir/lb.toml" >"$dir/lb.out" 2>"$dir/lb.log" &
pids+=($!)
wait_line "$dir/lb.out"
balancer=$(sed -n 's/^listening on //p' "$dir/lb.out")

nginx_port=$(free_port)
mkdir -p "$dir/nginx/logs"
cat >"$dir/nginx/nginx.conf" <<NGINX
worker_processes $THREADS;
pid nginx.pid;
error_log logs/error.log warn;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
events { worker_connections 16384; }
stream {
    upstream chat { server $backend; }
    server {
        listen 127.0.0.1:$nginx_port;
        proxy_pass chat;
        proxy_timeout 24h;
        proxy_connect_timeout 1s;
        tcp_nodelay on;
    }
}
NGINX
nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/"$nginx_port") 2>/dev/null && break; sleep 0.05; done
nginx_addr="127.0.0.1:$nginx_port"

echo "machine: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); balancer threads and nginx workers: $THREADS"
pingpong() {
    target/release/chatbench --server "$1" --server-pid "$server_pid" --runs "$RUNS" --warmup 2s \
        --duration 5s --json --no-progress pingpong --pairs 100 | tail -1 |
        python3 -c 'import json,sys; m=json.load(sys.stdin)["median"]; print(json.dumps({"per_s": m["per_s"], "p50_us": m["p50_us"], "p99_us": m["p99_us"], "errors": m["errors_total"]}))'
}
connrate() {
    for _ in $(seq 1 "$RUNS"); do python3 scripts/proxy_conn_rate.py "$1" 32 5; done |
        python3 -c 'import json,sys,statistics as st; r=[json.loads(l) for l in sys.stdin]; print(json.dumps({k: st.median([x[k] for x in r]) for k in r[0]}))'
}
declare -A result
for name in direct balancer nginx; do
    case $name in direct) addr=$backend ;; balancer) addr=$balancer ;; nginx) addr=$nginx_addr ;; esac
    result[$name-pp]=$(pingpong "$addr")
    result[$name-cr]=$(connrate "$addr")
    echo "$name keep-alive ping-pong: ${result[$name-pp]}"
    echo "$name new connections:      ${result[$name-cr]}"
done
python3 - "${result[direct-pp]}" "${result[balancer-pp]}" "${result[nginx-pp]}" \
    "${result[direct-cr]}" "${result[balancer-cr]}" "${result[nginx-cr]}" <<'PY'
import json, sys
dpp, bpp, npp, dcr, bcr, ncr = (json.loads(a) for a in sys.argv[1:])
added = lambda x, base: x["p99_us"] - base["p99_us"]
print(json.dumps({
    "keepalive_throughput_ratio": round(bpp["per_s"] / npp["per_s"], 3),
    "keepalive_added_p99_us": {"balancer": round(added(bpp, dpp)), "nginx": round(added(npp, dpp))},
    "connection_rate_ratio": round(bcr["connections_per_s"] / ncr["connections_per_s"], 3),
    "connection_added_p99_us": {"balancer": added(bcr, dcr), "nginx": added(ncr, dcr)},
}))
PY
