#!/usr/bin/env bash
# Builds release binaries, starts chatserver on a free port in a temporary
# directory, runs the chatbench scenarios of docs/BENCHMARKS.md against it
# (median of RUNS runs each) and stops it. Results: one JSON line per run
# and per median in $OUT (default bench-results.jsonl in the current dir).
#
#   scripts/bench.sh                      # every scenario, SQLite
#   SCENARIOS="pingpong fanout" scripts/bench.sh
#   DATABASE_URL=mysql://root@127.0.0.1:3306/chatbench SCENARIOS=pingpong scripts/bench.sh
#
# Environment: RUNS (3), DURATION (10s), WARMUP (2s), IDLE_CONNECTIONS
# (100000, or 1000 below the hard fd limit), SOURCE_IPS (127.0.0.1..127.0.0.5), CHATSERVER_BIN / CHATBENCH_BIN
# (skip building), DATABASE_URL (default: SQLite in the temp dir),
# CROSS_SERVERS (comma-separated addresses of a running cluster for `cross`),
# BALANCER_BIN (for `proxy`: balancer vs Nginx, default: next to chatbench),
# NGINX_BIN (default nginx; `proxy` is skipped when it is missing).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
# 100,000 needs a hard RLIMIT_NOFILE above that for both processes; where
# the hard limit is lower (and cannot be raised), stay 1,000 below it.
HARD_NOFILE="$(ulimit -Hn)"
if [[ "$HARD_NOFILE" == unlimited || "$HARD_NOFILE" -gt 101000 ]] || ulimit -Hn 250000 2>/dev/null; then
    IDLE_DEFAULT=100000
else
    IDLE_DEFAULT=$((HARD_NOFILE - 1000))
fi
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-$IDLE_DEFAULT}"
SOURCE_IPS="${SOURCE_IPS:-127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5}"
SCENARIOS="${SCENARIOS:-pingpong pingpong1 fanout offline login register idle proxy}"
OUT="${OUT:-$PWD/bench-results.jsonl}"

if [[ -z "${CHATSERVER_BIN:-}" || -z "${CHATBENCH_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --release -p chatbench -p chatserver -p balancer)
    TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
    CHATSERVER_BIN="${CHATSERVER_BIN:-$TARGET/release/chatserver}"
    CHATBENCH_BIN="${CHATBENCH_BIN:-$TARGET/release/chatbench}"
fi

WORK="$(mktemp -d -t chatbench.XXXXXX)"
SERVER_PID=""
SERVER_ADDR=""

stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT

# start_server NAME [chatserver options...]: port 0 (a free port), database
# in $WORK/NAME unless DATABASE_URL is set; sets SERVER_PID and SERVER_ADDR.
start_server() {
    local name="$1"; shift
    local dir="$WORK/$name"
    mkdir -p "$dir"
    local db=()
    [[ -n "${DATABASE_URL:-}" ]] && db=(--database-url "$DATABASE_URL")
    # chatbench registers and connects everyone from 127.0.0.1: lift the
    # limits that would otherwise refuse it as one abusive client.
    local limits=(--register-per-address 1000000 --create-group-per-user 1000000
                  --max-connections 1000000 --max-connections-per-ip 1000000)
    # The fd limit is raised here, for the server process only: to 250,000
    # when allowed (CAP_SYS_RESOURCE), else to the hard limit.
    (cd "$dir" && { ulimit -n 250000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; } && exec env RUST_LOG=warn "$CHATSERVER_BIN" 127.0.0.1 0 "${db[@]}" "${limits[@]}" "$@" \
        >"$dir/stdout" 2>"$dir/stderr") &
    SERVER_PID=$!
    for _ in $(seq 300); do
        SERVER_ADDR="$(sed -n 's/^listening on //p' "$dir/stdout" 2>/dev/null || true)"
        [[ -n "$SERVER_ADDR" ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$dir/stderr" >&2; echo "chatserver died" >&2; exit 1; }
        sleep 0.1
    done
    [[ -n "$SERVER_ADDR" ]] || { echo "chatserver did not start" >&2; exit 1; }
    echo "# chatserver $* on $SERVER_ADDR (pid $SERVER_PID)" >&2
}

# bench ARGS...: runs chatbench against the current server, appending its JSON lines to $OUT.
bench() {
    echo "# chatbench $*" >&2
    "$CHATBENCH_BIN" --server "$SERVER_ADDR" --server-pid "$SERVER_PID" --runs "$RUNS" \
        --warmup "$WARMUP" --duration "$DURATION" "$@" | keep_json
}

# Tables to the terminal, JSON lines to $OUT.
keep_json() {
    local line
    while IFS= read -r line; do
        if [[ "$line" == "{"* ]]; then echo "$line" >>"$OUT"; else echo "$line"; fi
    done
}

echo "# $(date -u +%FT%TZ) $(nproc) cpus, $(uptime)" >&2
# v1 runs measure the server, not the 5 ms spacing it gives original clients.
for scenario in $SCENARIOS; do
    case "$scenario" in
        pingpong)
            start_server pingpong --v1-write-gap 0s
            bench pingpong --pairs 100 --v1
            bench pingpong --pairs 100
            stop_server ;;
        pingpong1)
            start_server pingpong1 --v1-write-gap 0s
            bench pingpong --pairs 1 --v1
            bench pingpong --pairs 1
            stop_server ;;
        fanout)
            start_server fanout --v1-write-gap 0s
            bench fanout --members 50 --v1
            bench fanout --members 50
            stop_server ;;
        offline)
            start_server offline --v1-write-gap 0s
            bench offline --messages 200 --v1
            bench offline --messages 200
            stop_server ;;
        login)
            # Default (OWASP minimum) hashing cost.
            start_server login
            bench login --users 1000 --chat-pairs 10 --duration 5s
            stop_server ;;
        register)
            start_server register
            RUNS=1 bench register --users 200
            stop_server ;;
        idle)
            # Cheap hashing to create the users quickly; each run on a fresh
            # server process (same database), so RSS starts from scratch.
            users="$WORK/idle-users.txt"
            for run in $(seq "$RUNS"); do
                start_server idle --hash-memory-kib 64 --hash-iterations 1
                RUNS=1 bench idle --connections "$IDLE_CONNECTIONS" --hold 5s \
                    --source-ips "$SOURCE_IPS" --users-file "$users" --setup-concurrency 256
                stop_server
            done ;;
        cross)
            # Needs a running cluster: CROSS_SERVERS=addr1,addr2 (and their pids in CROSS_PIDS).
            [[ -n "${CROSS_SERVERS:-}" ]] || { echo "# cross: set CROSS_SERVERS (cluster mode pending)" >&2; continue; }
            "$CHATBENCH_BIN" --server "$CROSS_SERVERS" ${CROSS_PIDS:+--server-pid "$CROSS_PIDS"} --runs "$RUNS" \
                --warmup "$WARMUP" --duration "$DURATION" cross --pairs 100 | keep_json ;;
        proxy)
            # Balancer vs Nginx (issue 4): chatbench starts its own echo
            # backends, the balancer and nginx; no chat server involved.
            command -v "${NGINX_BIN:-nginx}" >/dev/null || { echo "# proxy: nginx not found, skipped" >&2; continue; }
            echo "# chatbench proxy" >&2
            "$CHATBENCH_BIN" --runs "$RUNS" --warmup "$WARMUP" --duration "$DURATION" proxy \
                --nginx-bin "${NGINX_BIN:-nginx}" ${BALANCER_BIN:+--balancer-bin "$BALANCER_BIN"} | keep_json ;;
        *) echo "unknown scenario $scenario" >&2; exit 1 ;;
    esac
done
echo "# results appended to $OUT" >&2
