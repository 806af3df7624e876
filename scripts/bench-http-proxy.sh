#!/usr/bin/env bash
# HTTP through the layer-4 proxies (issue 15): wrk against two Nginx HTTP
# backends, directly, through our balancer and through Nginx's stream
# proxy, interleaved run by run so a change in the machine's load hits all
# three alike. Prints one line per measurement and a table of medians with
# the balancer/Nginx ratios.
#
#   cargo build --release -p balancer
#   scripts/bench-http-proxy.sh [BALANCER_BIN]      # default target/release/balancer
#
# Environment (defaults in brackets):
#   THREADS      balancer runtime threads = Nginx stream worker processes [nproc]
#   RUNS         measured runs per test and target, the median is printed [3]
#   DURATION     wrk's measured window [5s]
#   CONNS        wrk connections [50]
#   WRK_THREADS  wrk threads [1]
#   HALF_CLOSE   the balancer's lb.toml `half_close` [false: like the Nginx
#                stream proxy here, which keeps its default proxy_half_close off;
#                empty: the line is left out, for a balancer without the key]
#   TESTS        "keepalive close": HTTP/1.1 keep-alive, and
#                `Connection: close` (a new TCP connection per request)
#   BASE_PORT    four consecutive ports from here are used [18480]
#
# Needs nginx with its stream module and wrk (Debian: nginx
# libnginx-mod-stream wrk). Everything runs on 127.0.0.1 and is stopped,
# and its scratch directory removed, at exit. "proxy CPU" is utime + stime
# of the balancer, or of the Nginx stream master and workers, per request.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BALANCER_BIN="${1:-$ROOT/target/release/balancer}"
THREADS="${THREADS:-$(nproc)}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-5s}"
CONNS="${CONNS:-50}"
WRK_THREADS="${WRK_THREADS:-1}"
HALF_CLOSE="${HALF_CLOSE-false}"
TESTS="${TESTS:-keepalive close}"
BASE_PORT="${BASE_PORT:-18480}"
STREAM_MODULE="${STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}"

B1=$BASE_PORT
B2=$((BASE_PORT + 1))
NGINX_PORT=$((BASE_PORT + 2))
LB_PORT=$((BASE_PORT + 3))

[[ -x "$BALANCER_BIN" ]] || { echo "no balancer at $BALANCER_BIN: cargo build --release -p balancer" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx not found (Debian: nginx libnginx-mod-stream)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk not found (Debian: wrk)" >&2; exit 1; }

WORK="$(mktemp -d -t bench-http-proxy.XXXXXX)"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

load_module=""
[[ -f "$STREAM_MODULE" ]] && load_module="load_module $STREAM_MODULE;"

# The backends: one Nginx, one worker, two HTTP servers answering a fixed
# 64-byte body, so that the proxies' cost is what differs.
mkdir -p "$WORK/backends" "$WORK/stream"
cat >"$WORK/backends/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $WORK/backends/nginx.pid;
error_log $WORK/backends/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$B1 reuseport backlog=4096; location / { return 200 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"; } }
    server { listen 127.0.0.1:$B2 reuseport backlog=4096; location / { return 200 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"; } }
}
EOF
# The Nginx stream proxy, configured as chatbench proxy configures it.
cat >"$WORK/stream/nginx.conf" <<EOF
daemon off;
worker_processes $THREADS;
pid $WORK/stream/nginx.pid;
error_log $WORK/stream/error.log warn;
$load_module
events { worker_connections 16384; }
stream {
    upstream backends {
        server 127.0.0.1:$B1 max_fails=3 fail_timeout=10s;
        server 127.0.0.1:$B2 max_fails=3 fail_timeout=10s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        proxy_pass backends;
        proxy_connect_timeout 1s;
        proxy_timeout 24h;
        tcp_nodelay on;
    }
}
EOF
cat >"$WORK/lb.toml" <<EOF
listen = "127.0.0.1:$LB_PORT"
connect_timeout = "1s"
idle_timeout = "0s"
shutdown_grace = "1s"
${HALF_CLOSE:+half_close = $HALF_CLOSE}

[health]
kind = "tcp"

[[backend]]
address = "127.0.0.1:$B1"

[[backend]]
address = "127.0.0.1:$B2"
EOF

nginx -p "$WORK/backends" -c "$WORK/backends/nginx.conf" 2>>"$WORK/backends/error.log" &
PIDS+=($!)
nginx -p "$WORK/stream" -c "$WORK/stream/nginx.conf" 2>>"$WORK/stream/error.log" &
NGINX_PID=$!
PIDS+=($NGINX_PID)
TOKIO_WORKER_THREADS=$THREADS RUST_LOG=warn "$BALANCER_BIN" --config "$WORK/lb.toml" >"$WORK/lb.out" 2>"$WORK/lb.err" &
LB_PID=$!
PIDS+=($LB_PID)

for port in $B1 $B2 $NGINX_PORT $LB_PORT; do
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
done
sleep 1 # the balancer's first health checks

ticks=$(getconf CLK_TCK)
# utime + stime, in clock ticks, of a process and its children.
cpu_of() {
    local total=0 p f
    for p in "$1" $(ps -o pid= --ppid "$1"); do
        f=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue
        total=$((total + ${f% *} + ${f#* }))
    done
    echo "$total"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'; }

RESULTS="$WORK/results"
: >"$RESULTS"
echo "== wrk -t$WRK_THREADS -c$CONNS -d$DURATION; balancer $BALANCER_BIN (half_close = $HALF_CLOSE), $THREADS threads = Nginx workers; load $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq "$RUNS"); do
    for test in $TESTS; do
        header=()
        [[ $test == close ]] && header=(-H "Connection: close")
        for target in direct balancer nginx; do
            case $target in
                direct) port=$B1 pid="" ;;
                balancer) port=$LB_PORT pid=$LB_PID ;;
                nginx) port=$NGINX_PORT pid=$NGINX_PID ;;
            esac
            before=0
            [[ -n $pid ]] && before=$(cpu_of "$pid")
            out=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency "${header[@]}" "http://127.0.0.1:$port/")
            cpu_us="-"
            rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
            total=$(awk '/requests in/ { print $1 }' <<<"$out")
            if [[ -n $pid ]]; then
                after=$(cpu_of "$pid")
                cpu_us=$(awk -v d=$((after - before)) -v t="$ticks" -v n="$total" 'BEGIN { printf "%.2f", d / t * 1e6 / n }')
            fi
            # wrk prints latency percentiles as e.g. "99%    1.23ms"; in µs:
            p99=$(awk '$1 == "99%" { v = $2; u = 1; if (v ~ /us$/) u = 1; else if (v ~ /ms$/) u = 1000; else if (v ~ /s$/) u = 1000000; sub(/[a-z]+$/, "", v); printf "%.0f", v * u }' <<<"$out")
            errors=$(awk '/Socket errors|Non-2xx/ { $1 = $1; printf "%s; ", $0 }' <<<"$out")
            printf -- "-- run %d/%d %-9s %-8s %10.0f req/s  p99 %6s µs  proxy cpu %7s µs/req  %s\n" \
                "$run" "$RUNS" "$test" "$target" "$rps" "$p99" "$cpu_us" "${errors:-errors none}"
            echo "$test $target $rps $p99 $cpu_us" >>"$RESULTS"
        done
    done
done

echo "== medians of $RUNS runs; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| test | target | requests/s | p99 | proxy CPU |"
echo "|---|---|---|---|---|"
for test in $TESTS; do
    for target in direct balancer nginx; do
        rps=$(awk -v t="$test" -v g="$target" '$1 == t && $2 == g { print $3 }' "$RESULTS" | median)
        p99=$(awk -v t="$test" -v g="$target" '$1 == t && $2 == g { print $4 }' "$RESULTS" | median)
        cpu=$(awk -v t="$test" -v g="$target" '$1 == t && $2 == g && $5 != "-" { print $5 }' "$RESULTS" | median)
        printf "| %s | %s | %.0f | %s µs | %s |\n" "$test" "$target" "$rps" "$p99" "$([[ $cpu == - ]] && echo - || echo "$cpu µs/req")"
        eval "m_${test}_${target}_rps=$rps m_${test}_${target}_p99=$p99 m_${test}_${target}_cpu=$cpu"
    done
done
for test in $TESTS; do
    eval "r=\$m_${test}_balancer_rps n=\$m_${test}_nginx_rps rp=\$m_${test}_balancer_p99 np=\$m_${test}_nginx_p99 rc=\$m_${test}_balancer_cpu nc=\$m_${test}_nginx_cpu"
    awk -v t="$test" -v r="$r" -v n="$n" -v rp="$rp" -v np="$np" -v rc="$rc" -v nc="$nc" \
        'BEGIN { printf "ratios balancer/nginx, %s: requests/s %.3f, p99 %.3f, CPU per request %.3f\n", t, r / n, rp / np, rc / nc }'
done
