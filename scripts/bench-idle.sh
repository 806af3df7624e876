#!/usr/bin/env bash
# Idle memory per logged-in connection (issue 15), A/B of two chat server
# builds: for each round and build, a fresh server on one SQLite database
# (users registered once, cheap hashing) holds IDLE_CONNECTIONS logged-in
# connections; then, with them still held, 100 ping-pong pairs with
# receipts measure chat beside them. Prints one JSON line per run (to $OUT
# too).
#
#   A_BIN=/tmp/before-chatserver B_BIN=target/release/chatserver scripts/bench-idle.sh
#
# Environment: A_BIN, B_BIN (required; the same path twice measures one
# build), ROUNDS (3), IDLE_CONNECTIONS (19000: one process may hold 20,000
# descriptors here), PAIRS (100), DURATION (in seconds: 10s), OUT
# (bench-idle.jsonl, appended to; the medians are of this invocation).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench-server.sh
. "$ROOT/scripts/bench-server.sh"
ab_builds
ROUNDS="${ROUNDS:-3}"
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-19000}"
PAIRS="${PAIRS:-100}"
DURATION="${DURATION:-10s}"
OUT="${OUT:-$PWD/bench-idle.jsonl}"

bench_begin bench-idle
ulimit -Sn "$(ulimit -Hn)"
# Loopback source addresses, so that 19,000 connections leave ephemeral
# ports to spare between runs (TIME_WAIT).
SOURCES="$(echo 127.0.0.{1..12} | tr ' ' ',')"
USERS="$BENCH_WORK/idle.users"
# This invocation's lines, for its medians ($OUT keeps earlier runs too).
RUNS_FILE="$BENCH_WORK/runs.jsonl"
label() { jq -c --arg name "$1" '. + {label: $name}' | tee -a "$OUT" "$RUNS_FILE"; }

echo "# $(date -u +%FT%TZ) $(nproc) cpus, $(uptime)" >&2
for round in $(seq "$ROUNDS"); do
    for side in A B; do
        bin="A_BIN"; [[ $side == B ]] && bin="B_BIN"
        start "${!bin}" "idle-$round-$side" "$(sqlite_url idle)" "${BENCH_LIMITS[@]}"
        # Memory first, nothing else on the server...
        "$BENCH_BIN" --json --server "$ADDR" --server-pid "$PID" --runs 1 \
            --users-file "$USERS" --setup-concurrency 128 --source-ips "$SOURCES" \
            idle --connections "$IDLE_CONNECTIONS" --hold 3s | label "$side-idle"
        # ...then chat beside as many idle connections (their memory figure
        # includes the chat's and is not the one reported).
        hold=$(( 30 + ${DURATION%s} ))
        "$BENCH_BIN" --json --server "$ADDR" --server-pid "$PID" --runs 1 \
            --users-file "$USERS" --source-ips "$SOURCES" \
            idle --connections "$IDLE_CONNECTIONS" --hold "${hold}s" >/dev/null &
        idle=$!
        # Chat starts once the idle connections are logged in.
        for _ in $(seq 600); do
            n="$(ss -Htn state established "( sport = :${ADDR##*:} )" | wc -l)"
            (( n >= IDLE_CONNECTIONS )) && break
            sleep 0.5
        done
        sleep 2
        "$BENCH_BIN" --json --server "$ADDR" --server-pid "$PID" --runs 1 --warmup 2s \
            --duration "$DURATION" pingpong --pairs "$PAIRS" --delivered \
            | label "$side-chat-beside-idle"
        wait "$idle"
        stop_server
    done
done

echo "medians:" >&2
for label in A-idle B-idle; do
    jq -s --arg l "$label" '[.[] | select(.label == $l) | .rss_per_conn_kib] | sort | .[length/2|floor] | "\($l): \(.) KiB per idle connection"' "$RUNS_FILE"
done
for label in A-chat-beside-idle B-chat-beside-idle; do
    jq -s --arg l "$label" '[.[] | select(.label == $l)] | sort_by(.per_s) | .[length/2|floor] | "\($l): \(.per_s)/s p99 \(.latency.p99_us/1000) ms"' "$RUNS_FILE"
done
