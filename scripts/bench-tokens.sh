#!/usr/bin/env bash
# Token logins per second (the delivery issue asks for 5,000 on this box),
# A/B of two chat server builds: rounds alternate the builds, each run on a
# fresh server and database (SQLite, or MariaDB with DB=mysql), one runtime
# thread, cheap hashing (a token login hashes nothing; registering the
# users before the measured part does). Prints one JSON line per run (to
# $OUT too) and the medians of this invocation.
#
#   A_BIN=/tmp/before-chatserver B_BIN=target/release/chatserver scripts/bench-tokens.sh
#
# Environment: A_BIN, B_BIN (required; the same path twice measures one
# build), DB (sqlite or mysql), ROUNDS (3), DURATION (5s), USERS (2000),
# WORKERS (32), MYSQL_URL, OUT (bench-tokens.jsonl, appended to).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench-server.sh
. "$ROOT/scripts/bench-server.sh"
ab_builds
DB="${DB:-sqlite}"
[[ $DB == sqlite || $DB == mysql ]] || { echo "DB must be sqlite or mysql, not $DB" >&2; exit 2; }
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5s}"
USERS="${USERS:-2000}"
WORKERS="${WORKERS:-32}"
OUT="${OUT:-$PWD/bench-tokens.jsonl}"

bench_begin bench-tokens
LIFT=("${BENCH_LIMITS[@]}" --worker-threads 1)
RUNS_FILE="$BENCH_WORK/runs.jsonl"

echo "# $(date -u +%FT%TZ) $(nproc) cpus, $(uptime)" >&2
for round in $(seq "$ROUNDS"); do
    for side in A B; do
        bin="A_BIN"
        [[ $side == B ]] && bin="B_BIN"
        url="$(sqlite_url "$side-$round")"
        [[ $DB == mysql ]] && url="$(mysql_url "$side-$round")"
        start "${!bin}" "$side-$round" "$url" "${LIFT[@]}"
        "$BENCH_BIN" --json --server "$ADDR" --server-pid "$PID" --runs 1 --duration "$DURATION" \
            tokens --users "$USERS" --workers "$WORKERS" \
            | jq -c --arg name "$side-$DB" '. + {label: $name}' | tee -a "$OUT" "$RUNS_FILE"
        stop_server
    done
done

echo "medians:" >&2
for label in "A-$DB" "B-$DB"; do
    jq -s --arg l "$label" '[.[] | select(.label == $l)] | sort_by(.per_s) | .[length/2|floor] | "\($l): \(.per_s) token logins/s, p99 \(.latency.p99_us/1000) ms"' "$RUNS_FILE"
done
