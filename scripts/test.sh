#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: starts (or installs) what the
# tests need — MariaDB, Redis, Nginx with the stream module, Chromium and
# chromedriver — then checks formatting and lints and runs every test of the
# workspace.
#
# Each run has an id, CHAT_TEST_RUN=<unix seconds>_<hex>, that the tests
# (testkit::run) put in everything they leave on the machine: MariaDB
# databases chat_test_<run>_*, Redis keys test:<run>:*, files under
# ${TMPDIR:-/tmp}/chatchat-tests/<run>/. At exit this run removes its own,
# and those of runs older than a day (killed runs, plain `cargo test`); it
# never touches a younger run's, so two runs on one machine do not collide.
#
# MariaDB is reached at CHAT_TEST_MYSQL_URL (default mysql://root@127.0.0.1:3306;
# databases on another server are not cleaned up here), Redis at
# 127.0.0.1:6379. Nothing is skipped: a missing component fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/services.sh
. scripts/services.sh

# Leftovers older than this belong to runs that are over.
STALE_AFTER_SECONDS=$((24 * 3600))
RUN_PATTERN='^[0-9]{10}_[0-9a-f]{4,8}$'

if [ -z "${CHAT_TEST_RUN:-}" ]; then
    CHAT_TEST_RUN="$(date +%s)_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
fi
if ! [[ $CHAT_TEST_RUN =~ $RUN_PATTERN ]]; then
    log "CHAT_TEST_RUN=$CHAT_TEST_RUN is not <unix seconds>_<hex>"
    exit 1
fi
export CHAT_TEST_RUN
log "test run $CHAT_TEST_RUN"

# Reads run ids on stdin, one a line; prints those to clean up: this run's,
# and well-formed ones older than STALE_AFTER_SECONDS.
runs_to_clean() {
    local now run
    now=$(date +%s)
    while read -r run; do
        [[ $run =~ $RUN_PATTERN ]] || continue
        if [ "$run" = "$CHAT_TEST_RUN" ] || [ $((now - 10#${run%%_*})) -gt "$STALE_AFTER_SECONDS" ]; then
            echo "$run"
        fi
    done | sort -u
}

clean_databases() {
    [ -n "${CHAT_TEST_MYSQL_URL:-}" ] && return 0
    mysqladmin -uroot -h127.0.0.1 ping >/dev/null 2>&1 || return 0
    local databases run db
    databases=$(mysql -uroot -h127.0.0.1 -N -e \
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'chat\\_test\\_%'")
    for run in $(sed -nE 's/^chat_test_([0-9]{10}_[0-9a-f]{4,8})_.*/\1/p' <<<"$databases" | runs_to_clean); do
        for db in $(grep "^chat_test_${run}_" <<<"$databases"); do
            mysql -uroot -h127.0.0.1 -e "DROP DATABASE \`$db\`"
        done
    done
}

clean_redis() {
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || return 0
    local run
    for run in $(redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'test:*' |
        sed -nE 's/^test:([0-9]{10}_[0-9a-f]{4,8}):.*/\1/p' | runs_to_clean); do
        redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "test:$run:*" |
            xargs -r -d '\n' redis-cli -h 127.0.0.1 -p 6379 del >/dev/null
    done
}

clean_files() {
    local root="${TMPDIR:-/tmp}/chatchat-tests" run
    [ -d "$root" ] || return 0
    for run in $(find "$root" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | runs_to_clean); do
        rm -rf "${root:?}/$run"
    done
}

clean_up() {
    log "removing what test run $CHAT_TEST_RUN and runs over a day old left"
    clean_databases || log "could not clean up databases"
    clean_redis || log "could not clean up Redis keys"
    clean_files || log "could not clean up files"
}

[ -n "${CHAT_TEST_MYSQL_URL:-}" ] || ensure_mariadb
ensure_redis
ensure_nginx
ensure_chromium
ensure_systemd
trap clean_up EXIT

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
cargo test --workspace --locked -- --test-threads "${CHAT_TEST_THREADS:-4}"
