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

LIMITS=(--hash-memory-kib 64 --hash-iterations 1 --register-per-address 1000000
        --max-connections 1000000 --max-connections-per-ip 1000000)
# start_server [OPTIONS]: sets ADDR, WEB and PID of a fresh chatserver whose
# web listener is on a free port.
start_server() {
    local dir; dir=$(mktemp -d)
    (cd "$dir" && exec env RUST_LOG=warn "$CHATSERVER_BIN" 127.0.0.1 0 \
        --ws-listen 127.0.0.1:0 "${LIMITS[@]}" "$@" >stdout 2>stderr) &
    PID=$!
    until WEB=$(sed -n 's/^web listening on //p' "$dir/stdout") && [ -n "$WEB" ]; do
        kill -0 "$PID" 2>/dev/null || { cat "$dir/stderr"; return 1; }; sleep 0.1
    done
    ADDR=$(sed -n 's/^listening on //p' "$dir/stdout")
}
B() { "$CHATBENCH_BIN" --json --server "$ADDR" --server-pid "$PID" --warmup 2s "$@" | tee -a "$OUT"; }

DB="sqlite://$(mktemp -d)/pp.db?mode=rwc"
start_server --database-url "$DB"
for run in $(seq 1 "$RUNS"); do
    # Fresh users per invocation: an earlier run's unconfirmed pushes would
    # replay at login.
    B --runs 1 --duration "$DURATION" pingpong --pairs "$PAIRS"
    B --runs 1 --duration "$DURATION" --ws-server "$WEB" pingpong --pairs "$PAIRS"
done
kill "$PID"; wait "$PID" || true

IDLE_DB="sqlite://$(mktemp -d)/idle.db?mode=rwc"
IDLE_USERS=$(mktemp)
for run in $(seq 1 "$RUNS"); do
    for transport in tcp ws; do
        start_server --database-url "$IDLE_DB"
        extra=()
        [[ $transport == ws ]] && extra=(--ws-server "$WEB")
        B --runs 1 --users-file "$IDLE_USERS" --setup-concurrency 128 "${extra[@]}" \
            idle --connections "$IDLE_CONNECTIONS" --hold 3s
        kill "$PID"; wait "$PID" || true
    done
done
