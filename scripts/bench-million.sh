#!/usr/bin/env bash
# A million idle logged-in connections on one box (issue 15): a cluster of
# SERVERS chat servers on MariaDB + Redis, each holding PER_SERVER
# connections from a load generator of its own (every process here may
# hold 20,000 descriptors), then PAIRS ping-pong pairs across servers
# chatting beside them. Prints what it took: memory of the servers, the
# load generators, the kernel, Redis and MariaDB, the login rate, and the
# chat's throughput and p99. One JSON line per figure goes to $OUT.
#
#   scripts/bench-million.sh                            # 55 × 18,200
#   SERVERS=3 PER_SERVER=19000 scripts/bench-million.sh # a smaller try
#
# Environment: SERVERS (55), PER_SERVER (18200), PAIRS (100), RUNS (3),
# DURATION (10s), CHATSERVER_BIN (target/release/chatserver), OUT
# (bench-million.jsonl), MYSQL_URL (mysql://root@127.0.0.1:3306),
# REDIS_URL (redis://127.0.0.1:6379).
#
# Users are inserted straight into the database (one cheap argon2 hash,
# made by a REGISTER, copied to every row): registering a million through
# the protocol would measure hashing, not connections. The servers run
# with --v2-idle-timeout 2h because the load generator's connections send
# nothing once logged in (a real client pings; see docs/BENCHMARKS.md).
#
# It changes these and restores them at exit: fs.file-max (two descriptors
# per connection on one box), net.core.netdev_max_backlog (see below),
# MariaDB's max_connections (each server holds its pool, its writer's
# connection, a probe and the inbox sweeper's), innodb_buffer_pool_size (2 GiB) and
# innodb_log_file_size (1 GiB), and net.netfilter.nf_conntrack_max when
# connection tracking is active.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench-server.sh
. "$ROOT/scripts/bench-server.sh"
SERVERS="${SERVERS:-55}"
PER_SERVER="${PER_SERVER:-18200}"
PAIRS="${PAIRS:-100}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10s}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
OUT="${OUT:-$PWD/bench-million.jsonl}"
TOTAL=$((SERVERS * PER_SERVER))
(cd "$ROOT" && cargo build --release -p chatserver -p chatbench)
CHATSERVER_BIN="$(realpath "${CHATSERVER_BIN:-$ROOT/target/release/chatserver}")"
BENCH_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/chatbench"
mysql_q() { mysql -uroot -h127.0.0.1 -N -e "$1"; }
# Host and port of REDIS_URL (redis://host:port).
REDIS_HOSTPORT="${REDIS_URL#redis://}"
redis_q() { redis-cli -h "${REDIS_HOSTPORT%:*}" -p "${REDIS_HOSTPORT##*:}" "$@"; }

bench_begin bench-million
PREFIX="million-$(basename "$BENCH_WORK")-"
DB_URL="$(mysql_url million)"
DB_NAME="${DB_URL##*/}"
SERVER_PIDS=()
SERVER_ADDRS=()
LOADER_PIDS=()
RESTORE=()
finish() {
    kill "${LOADER_PIDS[@]}" 2>/dev/null || true
    for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 3
    for pid in "${SERVER_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for setting in "${RESTORE[@]}"; do eval "$setting" >/dev/null || true; done
    # A scan while its keys are deleted misses some (two million keys left
    # 365,000 behind): scan again until none is left.
    for _ in 1 2 3 4 5; do
        [[ -z "$(redis_q --scan --pattern "$PREFIX*" | head -1)" ]] && break
        redis_q --scan --pattern "$PREFIX*" | xargs -r -n 1000 redis-cli \
            -h "${REDIS_HOSTPORT%:*}" -p "${REDIS_HOSTPORT##*:}" UNLINK >/dev/null || true
    done
    bench_cleanup
}
trap finish EXIT
figure() { # name, value, unit
    jq -cn --arg n "$1" --argjson v "$2" --arg u "$3" \
        --argjson servers "$SERVERS" --argjson per "$PER_SERVER" \
        '{figure: $n, value: $v, unit: $u, servers: $servers, per_server: $per}' | tee -a "$OUT"
}
kib() { awk '/^'"$1"':/ {print $2}' /proc/meminfo; }
rss_sum() { local sum=0 pid; for pid in "$@"; do
    sum=$((sum + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0))); done
    echo "$sum"; }
tcp_inuse() { awk '/^TCP:/ {print $3}' /proc/net/sockstat; }
# Connections the kernel gave up on (keepalive or retransmissions), since boot.
timeouts() { nstat -az TcpExtTCPAbortOnTimeout | awk '/TCPAbortOnTimeout/ {print $2}'; }

echo "# $(date -u +%FT%TZ) $(nproc) cpus, $(uptime); $SERVERS servers × $PER_SERVER = $TOTAL" >&2

# --- what the box needs, restored at exit
file_max="$(sysctl -n fs.file-max)"
want_files=$((2 * TOTAL + 200000))
if ((file_max < want_files)); then
    sysctl -qw fs.file-max="$want_files"
    RESTORE+=("sysctl -qw fs.file-max=$file_max")
fi
if [[ -r /proc/sys/net/netfilter/nf_conntrack_count ]] \
    && (($(cat /proc/sys/net/netfilter/nf_conntrack_count) > 0)); then
    conntrack_max="$(sysctl -n net.netfilter.nf_conntrack_max)"
    sysctl -qw net.netfilter.nf_conntrack_max=$((2 * TOTAL + 100000))
    RESTORE+=("sysctl -qw net.netfilter.nf_conntrack_max=$conntrack_max")
fi
max_connections="$(mysql_q 'SELECT @@global.max_connections')"
# Per server: the request pool, one writer (a pool under 8 gets one), the
# readiness probe and the inbox sweeper.
POOL=2
want_db=$((SERVERS * (POOL + 3) + 100))
if ((max_connections < want_db)); then
    mysql_q "SET GLOBAL max_connections = $want_db"
    RESTORE+=("mysql_q 'SET GLOBAL max_connections = $max_connections'")
fi
# Loopback carries both ends' packets through one per-CPU backlog of
# netdev_max_backlog packets (1,000 here). The kernel fires keepalive
# timers in batches, and a batch of probes from hundreds of thousands of
# idle sockets overflowed it: the probes were dropped, and after three
# dropped probes the servers closed the connections as timed out (973,962
# of them over two first tries, which looked like logins slowing down).
backlog="$(sysctl -n net.core.netdev_max_backlog)"
if ((backlog < 262144)); then
    sysctl -qw net.core.netdev_max_backlog=262144
    RESTORE+=("sysctl -qw net.core.netdev_max_backlog=$backlog")
fi
# A million users' rows and tokens do not fit MariaDB's default 128 MiB
# buffer pool, nor its writes a 96 MiB redo log: evicting and flushing
# pages slowed commits as the tables grew.
mysql_raise() { # variable, wanted value
    local was
    was="$(mysql_q "SELECT @@global.$1")"
    if ((was < $2)); then
        mysql_q "SET GLOBAL $1 = $2"
        RESTORE+=("mysql_q 'SET GLOBAL $1 = $was'")
    fi
}
mysql_raise innodb_buffer_pool_size $((2 << 30))
mysql_raise innodb_log_file_size $((1 << 30))
echo "# fs.file-max $(sysctl -n fs.file-max), netdev_max_backlog $(sysctl -n net.core.netdev_max_backlog), MariaDB max_connections $(mysql_q 'SELECT @@global.max_connections'), buffer pool $(mysql_q 'SELECT @@global.innodb_buffer_pool_size'), redo log $(mysql_q 'SELECT @@global.innodb_log_file_size')" >&2

# --- the cluster
SERVER_FLAGS=(--redis-url "$REDIS_URL" --redis-prefix "$PREFIX" --db-pool-size "$POOL"
    "${BENCH_LIMITS[@]}" --v2-idle-timeout 2h)
redis_before="$(redis_q INFO memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')"
mem_before="$(kib MemAvailable)"
slab_before="$(kib Slab)"
started=$SECONDS
for i in $(seq 0 $((SERVERS - 1))); do
    # One at a time: the first creates the database, each leases a number.
    start "$CHATSERVER_BIN" "chat-$i" "$DB_URL" --name "chat-$i" "${SERVER_FLAGS[@]}"
    SERVER_PIDS+=("$PID")
    SERVER_ADDRS+=("$ADDR")
    PID="" # bench_cleanup's stop_server is for one server; finish stops these
done
figure servers_started_s $((SECONDS - started)) s
servers_idle_kib="$(rss_sum "${SERVER_PIDS[@]}")"
figure server_rss_at_start_kib "$servers_idle_kib" KiB

# --- the users: one REGISTER for a cheap hash, copied to every row
"$BENCH_BIN" --json --server "${SERVER_ADDRS[0]}" --users-file "$BENCH_WORK/seed.users" \
    idle --connections 1 --hold 0s >/dev/null
seed_id="$(awk '{print $1; exit}' "$BENCH_WORK/seed.users")"
started=$SECONDS
mysql_q "INSERT INTO \`$DB_NAME\`.users (name, password_hash, created_at)
    SELECT CONCAT('m', seq), (SELECT password_hash FROM \`$DB_NAME\`.users WHERE id = $seed_id), 0
    FROM \`$DB_NAME\`.seq_1_to_$TOTAL"
mysql_q "SELECT id, name FROM \`$DB_NAME\`.users WHERE name LIKE 'm%' ORDER BY id" \
    | tr '\t' ' ' | split -d -a 3 -l "$PER_SERVER" - "$BENCH_WORK/users."
figure users_inserted_s $((SECONDS - started)) s

# --- a million logins: one load generator per server, its own source addresses
inuse_before="$(tcp_inuse)"
timeouts_before="$(timeouts)"
started=$SECONDS
for i in $(seq 0 $((SERVERS - 1))); do
    file="$BENCH_WORK/users.$(printf %03d "$i")"
    sources="127.1.$((i / 100)).$((2 * (i % 100) + 1)),127.1.$((i / 100)).$((2 * (i % 100) + 2))"
    "$BENCH_BIN" --json --server "${SERVER_ADDRS[$i]}" --users-file "$file" \
        --source-ips "$sources" --setup-concurrency 16 --timeout 60s \
        idle --connections "$PER_SERVER" --hold 120m >"$BENCH_WORK/loader-$i.out" 2>&1 &
    LOADER_PIDS+=($!)
done
last=-1
while :; do
    held=$(( ($(tcp_inuse) - inuse_before) / 2 ))
    ((held >= TOTAL)) && break
    alive=0
    for pid in "${LOADER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
    if ((alive < SERVERS)); then
        echo "a load generator ended early:" >&2
        grep -h -v '^{' "$BENCH_WORK"/loader-*.out | sort | uniq -c | head >&2
        exit 1
    fi
    if ((SECONDS - started >= last + 10)); then
        last=$((SECONDS - started))
        echo "# ${last}s: $held connections" >&2
    fi
    sleep 1
done
login_s=$((SECONDS - started))
figure connections "$held" connections
figure timed_out_connections "$(($(timeouts) - timeouts_before))" connections
figure login_s "$login_s" s
figure logins_per_s "$((TOTAL / (login_s > 0 ? login_s : 1)))" logins/s
sleep 10 # the last logins' writes settle

# --- what it took, while they are held
servers_kib="$(rss_sum "${SERVER_PIDS[@]}")"
loaders_kib="$(rss_sum "${LOADER_PIDS[@]}")"
figure server_rss_kib "$servers_kib" KiB
figure server_rss_per_conn_kib "$(jq -n "($servers_kib - $servers_idle_kib) / $TOTAL * 100 | round / 100")" KiB
figure loader_rss_kib "$loaders_kib" KiB
figure kernel_slab_growth_kib "$(($(kib Slab) - slab_before))" KiB
figure memory_used_growth_kib "$((mem_before - $(kib MemAvailable)))" KiB
redis_after="$(redis_q INFO memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')"
figure redis_growth_kib "$(((redis_after - redis_before) / 1024))" KiB
figure redis_keys "$(redis_q --scan --pattern "${PREFIX}*" | wc -l)" keys
figure mariadb_rss_kib "$(rss_sum "$(pgrep -o mariadbd)")" KiB
grep -E '^(TCP|sockets):' /proc/net/sockstat >&2

# --- chat beside them: pairs across servers (pair p on servers p and p+1)
servers_csv="$(IFS=,; echo "${SERVER_ADDRS[*]}")"
pids_csv="$(IFS=,; echo "${SERVER_PIDS[*]}")"
"$BENCH_BIN" --json --server "$servers_csv" --server-pid "$pids_csv" --runs "$RUNS" \
    --duration "$DURATION" pingpong --pairs "$PAIRS" --delivered \
    | jq -c '. + {label: "chat-beside-million"}' | tee -a "$OUT" \
    | jq -r 'select(.run) | "# chat run \(.run): \(.per_s)/s p99 \(.latency.p99_us / 1000) ms"' >&2
alive=0
for pid in "${LOADER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
figure connections_after_chat $(( ($(tcp_inuse) - inuse_before) / 2 )) connections
figure loaders_alive_after_chat "$alive" processes
figure timed_out_connections_after_chat "$(($(timeouts) - timeouts_before))" connections
