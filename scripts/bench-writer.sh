#!/usr/bin/env bash
# A/B of two chat server builds on the write path of the delivery work:
# 100-pair v2 ping-pong whose receivers confirm every push (DELIVERED),
# on SQLite and on MariaDB, rounds interleaved (A, B, A, B ...) so that load
# from elsewhere hits both alike. Prints one JSON line per run (to $OUT
# too) and the medians per label: deliveries/s and server CPU per delivery.
# On SQLite it also prints the largest size the WAL file reached in each run.
#
#   A_BIN=/tmp/before-chatserver B_BIN=target/release/chatserver scripts/bench-writer.sh
#
# Environment: A_BIN, B_BIN (required), ROUNDS (3), DURATION (5s),
# WARMUP (2s), PAIRS (100), ENGINES ("sqlite mariadb"), RECEIPTS (1: the
# receivers confirm every push; 0: they never do, so the inboxes only grow),
# MYSQL_URL (mysql://root@127.0.0.1:3306; a fresh database per server),
# OUT (bench-writer.jsonl).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench-server.sh
. "$ROOT/scripts/bench-server.sh"
ab_builds
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-2s}"
PAIRS="${PAIRS:-100}"
ENGINES="${ENGINES:-sqlite mariadb}"
OUT="${OUT:-$PWD/bench-writer.jsonl}"

bench_begin bench-writer
RECEIPTS="${RECEIPTS:-1}"
# Runs without receipts are labelled apart, so that $OUT's medians never mix
# the two.
DELIVERED=(--delivered)
MODE=""
[[ $RECEIPTS == 1 ]] || { DELIVERED=(); MODE="-noreceipts"; }
# watch_wal FILE SERVER_PID: while the server runs, keeps the largest size
# FILE had in FILE.max.
watch_wal() {
    local largest=0 size
    while kill -0 "$2" 2>/dev/null; do
        size="$(stat -c %s "$1" 2>/dev/null || echo 0)"
        (( size > largest )) && { largest=$size; echo "$largest" > "$1.max.new"; mv "$1.max.new" "$1.max"; }
        sleep 0.2
    done
}
url_for() {
    if [[ $1 == sqlite ]]; then sqlite_url "$2"; else mysql_url "$2"; fi
}

echo "# $(date -u +%FT%TZ) $(nproc) cpus, $(uptime)" >&2
for round in $(seq "$ROUNDS"); do
    for engine in $ENGINES; do
        for side in A B; do
            bin="$A_BIN"; [[ $side == B ]] && bin="$B_BIN"
            name="$side-$engine-$round"
            start "$bin" "$name" "$(url_for "$engine" "$name")" "${BENCH_LIMITS[@]}"
            watch_wal "$BENCH_WORK/$name.db-wal" "$PID" & watcher=$!
            "$BENCH_BIN" --server "$ADDR" --server-pid "$PID" --json "${DELIVERED[@]}" \
                --runs 1 --warmup "$WARMUP" --duration "$DURATION" pingpong --pairs "$PAIRS" \
                | { grep '^{' || echo "# $name: no result" >&2; } \
                | sed "s/^{/{\"label\":\"$side-$engine$MODE\",/" | tee -a "$OUT" || true
            stop_server
            wait "$watcher" 2>/dev/null || true
            if [[ $engine == sqlite ]]; then
                largest="$(cat "$BENCH_WORK/$name.db-wal.max" 2>/dev/null || true)"
                echo "# $name: largest WAL $(( ${largest:-0} >> 20 )) MiB" >&2
            fi
        done
    done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs.setdefault(r["label"], []).append(r)
for label, rs in sorted(runs.items()):
    rate = statistics.median(r["per_s"] for r in rs)
    p99 = statistics.median(r["latency"]["p99_us"] for r in rs) / 1000
    cpu = statistics.median(r["server_cpu_us_per_delivery"] for r in rs)
    errors = sum(r["error_count"] for r in rs)
    print(f"{label:16} {len(rs)} runs  median {rate:9.0f}/s  p99 {p99:6.2f} ms  server CPU {cpu:6.1f} us/delivery  errors {errors}")
PY
