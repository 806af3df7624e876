#!/usr/bin/env bash
# The figures of the delivery issue (docs/BENCHMARKS.md, "Stored before
# acknowledged"): this build, which stores every message before its ACK,
# against a reference build that does not (BASE_BIN, e.g. main before the
# change), in the same run, rounds interleaved so that load from elsewhere
# hits both alike. JSON lines go to $OUT; a summary (medians, ratios) to
# stdout.
#
#   git worktree add /tmp/base 2d4e36f && (cd /tmp/base && cargo build --release -p chatserver)
#   BASE_BIN=/tmp/base/target/release/chatserver scripts/bench-delivery.sh
#
# Environment: BASE_BIN (required), ROUNDS (3), DURATION (5s), WARMUP (2s),
# MYSQL_URL (mysql://root@127.0.0.1:3306; a fresh database per server),
# GROUP_MEMBERS (5000), GROUP_MESSAGES (3: the reference stores a copy per
# member, 300 MB per message), OUT (bench-delivery.jsonl).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
: "${BASE_BIN:?set BASE_BIN to the reference chatserver binary}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-2s}"
MYSQL_URL="${MYSQL_URL:-mysql://root@127.0.0.1:3306}"
GROUP_MEMBERS="${GROUP_MEMBERS:-5000}"
GROUP_MESSAGES="${GROUP_MESSAGES:-3}"
OUT="${OUT:-$PWD/bench-delivery.jsonl}"

(cd "$ROOT" && cargo build --release -p chatbench -p chatserver)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
HEAD_BIN="$TARGET/release/chatserver"
BENCH_BIN="$TARGET/release/chatbench"

# shellcheck source=scripts/bench-server.sh
. "$ROOT/scripts/bench-server.sh"
bench_begin bench-delivery

# The limits this build has against abusive clients would refuse a load
# generator that registers and logs in everyone from 127.0.0.1.
# The reference has no such limits; both run one runtime thread.
ONE=(--worker-threads 1)
bench() {
    local label="$1"; shift
    echo "# $label: chatbench $*" >&2
    "$BENCH_BIN" --server "$ADDR" --server-pid "$PID" --json "$@" \
        | sed "s/^{/{\"label\":\"$label\",/" | tee -a "$OUT"
}

echo "# $(date -u +%FT%TZ) $(nproc) cpus, $(uptime)" >&2
for round in $(seq "$ROUNDS"); do
    start "$BASE_BIN" "base-$round" "$(sqlite_url "base-$round")" "${ONE[@]}"
    bench base-sqlite --runs 1 --warmup "$WARMUP" --duration "$DURATION" pingpong --pairs 100
    bench base-fanout --runs 1 --warmup "$WARMUP" --duration "$DURATION" fanout --members 50
    stop_server
    start "$HEAD_BIN" "head-$round" "$(sqlite_url "head-$round")" "${BENCH_LIMITS[@]}" "${ONE[@]}"
    bench head-sqlite --runs 1 --warmup "$WARMUP" --duration "$DURATION" pingpong --pairs 100
    bench head-fanout --runs 1 --warmup "$WARMUP" --duration "$DURATION" fanout --members 50
    stop_server
    start "$HEAD_BIN" "head-mysql-$round" "$(mysql_url "$round")" "${BENCH_LIMITS[@]}" "${ONE[@]}"
    bench head-mariadb --runs 1 --warmup "$WARMUP" --duration "$DURATION" pingpong --pairs 100
    stop_server
done

# Token logins (no password hashing), SQLite.
start "$HEAD_BIN" tokens "$(sqlite_url tokens)" "${BENCH_LIMITS[@]}" "${ONE[@]}"
bench head-tokens --runs "$ROUNDS" --duration "$DURATION" tokens --users 2000 --workers 32
stop_server

# Group messages of 60 KB to offline members: time per message, and the
# database's growth per message (SQLite file with its WAL, checkpointed at
# the server's exit, then truncated with the sqlite3 shell).
for build in base head; do
    bin="$BASE_BIN"; extra=("${ONE[@]}")
    [[ $build == head ]] && { bin="$HEAD_BIN"; extra=("${BENCH_LIMITS[@]}" "${ONE[@]}"); }
    name="groupstore-$build"
    start "$bin" "$name" "$(sqlite_url "$name")" "${extra[@]}"
    # Registers the members once (kept in a users file), so that the
    # measured run below adds only the group, its joins and the messages.
    bench "$build-groupstore-setup" --runs 1 --users-file "$BENCH_WORK/$name.users" groupstore \
        --members "$GROUP_MEMBERS" --messages 1 --size 10 >/dev/null
    stop_server
    sqlite3 "$BENCH_WORK/$name.db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
    before=$(stat -c %s "$BENCH_WORK/$name.db")
    start "$bin" "$name" "$(sqlite_url "$name")" "${extra[@]}"
    bench "$build-groupstore" --runs 1 --users-file "$BENCH_WORK/$name.users" groupstore \
        --members "$GROUP_MEMBERS" --messages "$GROUP_MESSAGES" --size 60000 || true
    stop_server
    sqlite3 "$BENCH_WORK/$name.db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
    after=$(stat -c %s "$BENCH_WORK/$name.db")
    echo "{\"label\":\"$build-groupstore-bytes\",\"members\":$GROUP_MEMBERS,\"messages\":$GROUP_MESSAGES,\"db_bytes_per_message\":$(( (after - before) / GROUP_MESSAGES ))}" | tee -a "$OUT"
done
