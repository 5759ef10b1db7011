# Start / stop a throwaway PostgreSQL cluster for the tests (sourced by scripts/test.sh).
# PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user.
# Exports CIRCUIT_ATLAS_TEST_PG, the SQLAlchemy URL the database tests use.

start_test_postgres() {
    local bin port
    bin="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
    PG_DIR="$(mktemp -d /tmp/circuit-atlas-pg.XXXXXX)"
    port="${CIRCUIT_ATLAS_PG_PORT:-54329}"
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do  # taken (another cluster): the next one
        port=$((port + 1))
    done
    local run=()
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$PG_DIR"
        run=(runuser -u postgres --)
    fi
    "${run[@]}" "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust >/dev/null
    "${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c max_connections=200" start >/dev/null
    "${run[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres circuit_atlas_test
    PG_BIN="$bin"
    PG_RUN=("${run[@]}")
    export CIRCUIT_ATLAS_TEST_PG="postgresql+psycopg://postgres@127.0.0.1:$port/circuit_atlas_test"
}

stop_test_postgres() {
    if [ -n "${PG_DIR:-}" ]; then
        "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
}
