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

log() { printf '==> %s\n' "$*" >&2; }

apt_install() {
    log "installing $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
    fi
}

wait_for() { # description, command...
    local what=$1; shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    log "$what did not come up"; exit 1
}

ensure_mariadb() {
    if [ -z "${CHAT_TEST_MYSQL_URL:-}" ]; then
        command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
        if ! mysqladmin -uroot -h127.0.0.1 ping >/dev/null 2>&1; then
            log "starting MariaDB"
            start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
            wait_for MariaDB mysqladmin -uroot -h127.0.0.1 ping
        fi
        log "dropping databases left by earlier runs"
        mysql -uroot -h127.0.0.1 -N -e \
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'chat\\_test\\_%'" |
            while read -r db; do mysql -uroot -h127.0.0.1 -e "DROP DATABASE \`$db\`"; done
    fi
}

ensure_redis() {
    command -v redis-server >/dev/null || apt_install redis-server
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        log "starting Redis"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
        wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
    fi
}

ensure_nginx() {
    if ! command -v nginx >/dev/null || ! ls /usr/lib/nginx/modules/ngx_stream_module.so >/dev/null 2>&1; then
        apt_install nginx libnginx-mod-stream
    fi
}

ensure_mariadb
ensure_redis
ensure_nginx
rm -rf "${TMPDIR:-/tmp}/chatchat-tests"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
cargo test --workspace --locked -- --test-threads "${CHAT_TEST_THREADS:-4}"
