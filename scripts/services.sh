# Shared by scripts/test.sh and scripts/cluster.sh (source it): starts, or
# installs from Debian's packages, the services the project runs against.

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
    command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
    if ! mysqladmin -uroot -h127.0.0.1 ping >/dev/null 2>&1; then
        log "starting MariaDB"
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
        wait_for MariaDB mysqladmin -uroot -h127.0.0.1 ping
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
    if ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
        apt_install nginx libnginx-mod-stream
    fi
}

# The web client's tests drive a real headless Chromium through chromedriver
# (e2e/tests/browser).
ensure_chromium() {
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        apt_install chromium chromium-driver
    fi
}

# `systemd-analyze verify` checks the unit files in config/systemd.
ensure_systemd() {
    command -v systemd-analyze >/dev/null || apt_install systemd
}
