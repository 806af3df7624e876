#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: starts (or installs) what the
# tests need — MariaDB, Redis, Nginx with the stream module — then checks
# formatting and lints and runs every test of the workspace.
#
# MariaDB is reached at CHAT_TEST_MYSQL_URL (default mysql://root@127.0.0.1:3306);
# each test creates its own database named chat_test_*, dropped here at the
# next run. Nothing is skipped: a missing component fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/services.sh
. scripts/services.sh

drop_stale_test_databases() {
    [ -n "${CHAT_TEST_MYSQL_URL:-}" ] && return 0
    log "dropping databases left by earlier runs"
    mysql -uroot -h127.0.0.1 -N -e \
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'chat\\_test\\_%'" |
        while read -r db; do mysql -uroot -h127.0.0.1 -e "DROP DATABASE \`$db\`"; done
}

[ -n "${CHAT_TEST_MYSQL_URL:-}" ] || ensure_mariadb
ensure_redis
ensure_nginx
drop_stale_test_databases
# Keys left under test prefixes by runs that were killed (clean runs leave few).
redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'test:*' | xargs -r redis-cli -h 127.0.0.1 -p 6379 del >/dev/null
redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'e2e:*' | xargs -r redis-cli -h 127.0.0.1 -p 6379 del >/dev/null
rm -rf "${TMPDIR:-/tmp}/chatchat-tests"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
cargo test --workspace --locked -- --test-threads "${CHAT_TEST_THREADS:-4}"
