#!/usr/bin/env bash
# WebSocket against TCP v2 (docs/BENCHMARKS.md, "WebSocket"): 1:1
# ping-pong with PAIRS pairs, TCP and WebSocket runs alternated on one
# server (RUNS of each), then idle memory per logged-in connection, TCP and
# WebSocket, IDLE_CONNECTIONS each on a fresh server per run (same
# database). Release binaries; JSON lines in $OUT.
#
#   scripts/bench-ws.sh
#   RUNS=3 PAIRS=100 DURATION=10s IDLE_CONNECTIONS=5000 scripts/bench-ws.sh
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${RUNS:-3}"
PAIRS="${PAIRS:-100}"
DURATION="${DURATION:-10s}"
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-5000}"
OUT="${OUT:-$PWD/bench-ws-results.jsonl}"
if [[ -z "${CHATSERVER_BIN:-}" || -z "${CHATBENCH_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --release -p chatbench -p chatserver)
    TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
    CHATSERVER_BIN="${CHATSERVER_BIN:-$TARGET/release/chatserver}"
    CHATBENCH_BIN="${CHATBENCH_BIN:-$TARGET/release/chatbench}"
fi
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true

# shellcheck source=scripts/bench-server.sh
. "$ROOT/scripts/bench-server.sh"
bench_begin bench-ws
LIMITS=(--ws-listen 127.0.0.1:0 --register-per-address 1000000
        --max-connections 1000000 --max-connections-per-ip 1000000)
B() { "$CHATBENCH_BIN" --json --server "$ADDR" --server-pid "$PID" --warmup 2s "$@" | tee -a "$OUT"; }

start "$CHATSERVER_BIN" pingpong "$(sqlite_url pp)" "${LIMITS[@]}"
for run in $(seq 1 "$RUNS"); do
    # Fresh users per invocation: an earlier run's unconfirmed pushes would
    # replay at login.
    B --runs 1 --duration "$DURATION" pingpong --pairs "$PAIRS"
    B --runs 1 --duration "$DURATION" --ws-server "$WEB" pingpong --pairs "$PAIRS"
done
stop_server

# One database for every idle run, its users registered once.
IDLE_USERS="$BENCH_WORK/idle.users"
for run in $(seq 1 "$RUNS"); do
    for transport in tcp ws; do
        start "$CHATSERVER_BIN" "idle-$run-$transport" "$(sqlite_url idle)" "${LIMITS[@]}"
        extra=()
        [[ $transport == ws ]] && extra=(--ws-server "$WEB")
        B --runs 1 --users-file "$IDLE_USERS" --setup-concurrency 128 "${extra[@]}" \
            idle --connections "$IDLE_CONNECTIONS" --hold 3s
        stop_server
    done
done
