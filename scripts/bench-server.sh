# Sourced by the bench scripts: runs one chat server at a time, each in a
# directory of its own under a scratch directory, and at exit stops it,
# drops the MariaDB databases it made and removes the scratch directory.
#
#   BENCH_LIMITS              the limits lifted for benchmarks
#   bench_begin NAME          scratch directory, exit trap
#   start BIN DIR URL [args]  a server in $BENCH_WORK/DIR; sets PID, ADDR
#                             (and WEB, its --ws-listen address, if given)
#   stop_server               SIGTERM, then SIGKILL after 5 s
#   sqlite_url NAME / mysql_url NAME   a fresh database for one server
#
# Environment: MYSQL_URL (mysql://root@127.0.0.1:3306).

MYSQL_URL="${MYSQL_URL:-mysql://root@127.0.0.1:3306}"
# The hashing flags `start` gives each server: cheap, unless a script sets
# BENCH_HASHING=() for the server's default cost.
BENCH_HASHING=(--hash-memory-kib 64 --hash-iterations 1)
# Limits every benchmark server runs with, so that the load generator's
# registrations, logins and connections from one address are not refused
# (scripts add their own flags after these).
BENCH_LIMITS=(--register-per-address 1000000 --create-group-per-user 1000000
              --max-groups-per-user 1000000 --login-failures-per-address 1000000
              --login-failures-per-account-address 1000000
              --login-failures-per-account 1000000 --max-connections 1000000
              --max-connections-per-ip 1000000 --drain-period 0s)
PID=""
ADDR=""
WEB=""

# ab_builds: for the A/B scripts. Checks A_BIN and B_BIN and makes them
# absolute (the servers start in scratch directories), and builds chatbench
# (BENCH_BIN). Needs ROOT.
ab_builds() {
    : "${A_BIN:?set A_BIN}" "${B_BIN:?set B_BIN}"
    A_BIN="$(realpath "$A_BIN")"
    B_BIN="$(realpath "$B_BIN")"
    (cd "$ROOT" && cargo build --release -p chatbench)
    BENCH_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/chatbench"
}

bench_begin() {
    BENCH_WORK="$(mktemp -d -t "$1.XXXXXX")"
    # Databases are named after the scratch directory, so that cleanup finds
    # them all (they are made in subshells: no list of them survives).
    BENCH_DB_PREFIX="bench_$(basename "$BENCH_WORK" | tr -c 'a-zA-Z0-9\n' '_')"
    trap bench_cleanup EXIT
}

stop_server() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID"
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    PID=""
}

bench_cleanup() {
    stop_server
    local db
    for db in $(mysql -uroot -h127.0.0.1 -N -e \
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE '${BENCH_DB_PREFIX}\\_%'" 2>/dev/null); do
        mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$db\`" || true
    done
    rm -rf "$BENCH_WORK"
}

sqlite_url() { echo "sqlite://$BENCH_WORK/$1.db?mode=rwc"; }
mysql_url() { echo "$MYSQL_URL/${BENCH_DB_PREFIX}_${1//-/_}"; }

# start BIN DIR DATABASE_URL [options...]: BENCH_HASHING, warnings only.
start() {
    local bin="$1" name="$2" url="$3"; shift 3
    local dir="$BENCH_WORK/$name"
    mkdir -p "$dir"
    (cd "$dir" && exec env RUST_LOG=warn "$bin" 127.0.0.1 0 --database-url "$url" \
        "${BENCH_HASHING[@]}" "$@" >stdout 2>stderr) &
    PID=$!
    local wants_web=""
    [[ " $* " == *" --ws-listen "* ]] && wants_web=1
    for _ in $(seq 600); do
        ADDR="$(sed -n 's/^listening on //p' "$dir/stdout" 2>/dev/null || true)"
        WEB="$(sed -n 's/^web listening on //p' "$dir/stdout" 2>/dev/null || true)"
        [[ -n "$ADDR" && ( -z "$wants_web" || -n "$WEB" ) ]] && return 0
        kill -0 "$PID" 2>/dev/null || { cat "$dir/stderr" >&2; exit 1; }
        sleep 0.1
    done
    echo "$name did not start" >&2
    exit 1
}
