#!/usr/bin/env bash
# Starts a local cluster for trying things by hand: SERVERS chat servers
# (default 2, on ports 6000, 6002, 6004, ...; the web client and WebSocket
# endpoint of each on 7000, 7002, 7004, ...) sharing one MariaDB database
# and one Redis, and the balancer on port 8000 in front of all of them. The
# balancer's config is written to run/lb.toml, listing every server started
# here with weight 1 (config/lb.toml, the commented example, lists two).
# Logs go to run/logs/. Ctrl-C stops everything.
#
#   scripts/cluster.sh                       # then, in other terminals:
#   target/release/chatclient 127.0.0.1 8000
#   open http://127.0.0.1:7000/ in a browser
#
# CHAT_DATABASE_URL and CHAT_REDIS_URL override the defaults below.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
. scripts/services.sh

SERVERS=${SERVERS:-2}
DATABASE_URL=${CHAT_DATABASE_URL:-mysql://root@127.0.0.1:3306/chatchat}
REDIS_URL=${CHAT_REDIS_URL:-redis://127.0.0.1:6379}

ensure_mariadb
ensure_redis
log "building release binaries"
cargo build --release -q -p chatserver -p balancer -p chatclient
mkdir -p run/logs

pids=()
ports=()
stop_all() {
    log "stopping"
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 0' INT TERM

# Waits until a process printed its `listening on` line.
wait_ready() { # name, log file
    for _ in $(seq 1 120); do
        grep -q "^listening on" "$2" 2>/dev/null && return 0
        sleep 0.25
    done
    log "$1 did not start; see $2"; exit 1
}

for i in $(seq 0 $((SERVERS - 1))); do
    port=$((6000 + 2 * i))
    web_port=$((7000 + 2 * i))
    out="run/logs/chat-$i.out"
    target/release/chatserver 127.0.0.1 "$port" --name "chat-$i" \
        --database-url "$DATABASE_URL" --redis-url "$REDIS_URL" \
        --ws-listen "127.0.0.1:$web_port" \
        >"$out" 2>"run/logs/chat-$i.log" &
    pids+=($!)
    # One at a time: the first one creates the database and its tables.
    wait_ready "chat-$i" "$out"
    log "chat-$i listening on 127.0.0.1:$port (web client: http://127.0.0.1:$web_port/)"
    ports+=("$port")
done

# The balancer in front of every server started above; any setting left out
# takes its default, which config/lb.toml lists and explains.
{
    echo "# Written by scripts/cluster.sh: the $SERVERS chat servers it started."
    echo 'listen = "0.0.0.0:8000"'
    echo 'admin = "127.0.0.1:9100"'
    for port in "${ports[@]}"; do
        printf '\n[[backend]]\naddress = "127.0.0.1:%s"\n' "$port"
    done
} >run/lb.toml
target/release/balancer --config run/lb.toml >run/logs/balancer.out 2>run/logs/balancer.log &
pids+=($!)
wait_ready balancer run/logs/balancer.out
log "balancer listening on 0.0.0.0:8000 in front of $SERVERS servers (run/lb.toml; metrics: http://127.0.0.1:9100/metrics)"
log "connect with: target/release/chatclient 127.0.0.1 8000"
wait
