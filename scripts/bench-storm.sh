#!/usr/bin/env bash
# Login storms beside chat (issue 15, "login storms do not hurt chat"), A/B
# of two chat server builds: for each round and build, a fresh SQLite
# server; `chatbench login` registers USERS users, measures 1:1 chat p99
# with CHAT_PAIRS pairs, then logs every user in at once and measures it
# again. Prints one JSON line per run (to $OUT too) and, per build, the
# median ratio of the storm's p99 to the quiet p99 (the goal: at most 2).
#
#   A_BIN=/tmp/before-chatserver B_BIN=target/release/chatserver scripts/bench-storm.sh
#
# Environment: A_BIN, B_BIN (required), ROUNDS (3), USERS (1000),
# CHAT_PAIRS (10), HASHING (default: the server's default argon2id cost;
# cheap: 64 KiB and one pass, a denser storm), OUT (bench-storm.jsonl,
# appended to; the medians are of this invocation).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench-server.sh
. "$ROOT/scripts/bench-server.sh"
ab_builds
ROUNDS="${ROUNDS:-3}"
USERS="${USERS:-1000}"
CHAT_PAIRS="${CHAT_PAIRS:-10}"
HASHING="${HASHING:-default}"
OUT="${OUT:-$PWD/bench-storm.jsonl}"

bench_begin bench-storm
# The default cost is what users run.
[[ $HASHING == default ]] && BENCH_HASHING=()
RUNS_FILE="$BENCH_WORK/runs.jsonl"

echo "# $(date -u +%FT%TZ) $(nproc) cpus, $(uptime), hashing $HASHING" >&2
for round in $(seq "$ROUNDS"); do
    for side in A B; do
        bin="A_BIN"; [[ $side == B ]] && bin="B_BIN"
        start "${!bin}" "storm-$round-$side" "$(sqlite_url "storm-$round-$side")" "${BENCH_LIMITS[@]}"
        "$BENCH_BIN" --json --no-progress --server "$ADDR" --server-pid "$PID" \
            login --users "$USERS" --chat-pairs "$CHAT_PAIRS" \
            | { grep '^{' || echo "# storm-$round-$side: no result" >&2; } \
            | jq -c --arg l "$side" '. + {label: $l}' | tee -a "$OUT" "$RUNS_FILE" || true
        stop_server
    done
done

for side in A B; do
    jq -rs --arg l "$side" '[.[] | select(.label == $l)] | sort_by(.chat_p99_ratio) | .[length/2|floor]
        | "\($l): median storm/quiet chat p99 \(.chat_p99_ratio) (\(.chat_p99_base_us/1000) → \(.chat_p99_storm_us/1000) ms)"' "$RUNS_FILE"
done
