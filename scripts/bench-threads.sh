#!/usr/bin/env bash
# Measures SendMessage throughput, send-to-event latency at a fixed rate
# and the server memory held by idle Subscribe streams, on SQLite and on
# PostgreSQL, against a release build of `agyn serve`. Prints one JSON
# result per benchmark and a summary table. The method is described in
# docs/benchmarks.md.
#
# Usage: bash scripts/bench-threads.sh [sqlite|postgres|all, default all]
#
# Environment:
#   BENCH_POSTGRES_URL  PostgreSQL server with a `postgres` role that may
#                       create databases [default: postgres://postgres@127.0.0.1:5432]
#   BENCH_SECONDS       seconds per measured round or run [default: 10]
#   BENCH_ROUNDS        rounds of the throughput benchmark [default: 3]
#   BENCH_CONCURRENCY   SendMessage requests in flight [default: 512]
#   BENCH_STREAMS       idle Subscribe streams [default: 10000]
set -euo pipefail
cd "$(dirname "$0")/.."

backends="${1:-all}"
postgres="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}"
seconds="${BENCH_SECONDS:-10}"
rounds="${BENCH_ROUNDS:-3}"
concurrency="${BENCH_CONCURRENCY:-512}"
streams="${BENCH_STREAMS:-10000}"
# 32 streams per identity are allowed on one replica.
identities=$(((streams + 31) / 32))
port=18090
internal_port=18091
url="http://127.0.0.1:$port"
work=$(mktemp -d)
server=""
trap 'stop_server; rm -rf "$work"' EXIT

cargo build --release --locked -p agyn -p agyn-bench
target="${CARGO_TARGET_DIR:-target}/release"
agyn="$target/agyn"
bench="$target/agyn-bench"

# start_server DATA_DIR DATABASE_URL: starts `agyn serve` and waits until
# it has written its admin token and /healthz returns 200.
start_server() {
    local data=$1 database=$2
    "$agyn" serve --data-dir "$data" --database-url "$database" \
        --listen "127.0.0.1:$port" --internal-listen "127.0.0.1:$internal_port" \
        --log-level warn >>"$data.log" 2>&1 &
    server=$!
    for _ in $(seq 1 300); do
        if [ -s "$data/admin-token" ] && curl -fsS "$url/healthz" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "agyn serve did not start; its log:" >&2
    cat "$data.log" >&2
    exit 1
}

stop_server() {
    if [ -n "$server" ]; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        server=""
    fi
}

# run_backend NAME DATABASE_URL
run_backend() {
    local name=$1 database=$2
    local data="$work/$name"
    mkdir -m 700 "$data"
    # The server locks a SQLite file, so the identities are created first.
    "$bench" identities --database-url "$database" --count "$identities" \
        --output "$work/$name-identities"
    local common=(--url "$url" --admin-token-file "$data/admin-token"
        --identities "$work/$name-identities")

    start_server "$data" "$database"
    "$bench" latency "${common[@]}" --server-pid "$server" --rate 1000 \
        --duration "$seconds" | tee "$work/$name-latency.json"
    "$bench" send "${common[@]}" --server-pid "$server" --concurrency "$concurrency" \
        --duration "$seconds" --rounds "$rounds" | tee "$work/$name-send.json"
    stop_server

    # A fresh process, so that the memory baseline is not that of a
    # server which has just handled the load above.
    start_server "$data" "$database"
    sleep 2
    "$bench" idle-streams "${common[@]}" --server-pid "$server" --streams "$streams" \
        | tee "$work/$name-idle.json"
    stop_server
}

case "$backends" in
    sqlite | postgres | all) ;;
    *)
        echo "usage: bash scripts/bench-threads.sh [sqlite|postgres|all]" >&2
        exit 2
        ;;
esac
names=()
if [ "$backends" = sqlite ] || [ "$backends" = all ]; then
    run_backend sqlite "sqlite://$work/sqlite/agyn.db"
    names+=(sqlite)
fi
if [ "$backends" = postgres ] || [ "$backends" = all ]; then
    database="bench_$(date +%s)_$$"
    psql "$postgres/postgres" -qc "CREATE DATABASE $database"
    run_backend postgres "$postgres/$database"
    psql "$postgres/postgres" -qc "DROP DATABASE $database"
    names+=(postgres)
fi

echo
echo "| Backend | SendMessage/s (mean of $rounds) | errors | send→event p50 / p99 at 1,000/s | missing events | RSS held by $streams streams |"
echo "|---|---|---|---|---|---|"
for name in "${names[@]}"; do
    jq -rs --arg name "$name" \
        '"| \($name) | \(.[1].mean_sends_per_s) | \(.[1].errors + .[0].send_errors) | \(.[0].send_to_event.p50_ms) / \(.[0].send_to_event.p99_ms) ms | \(.[0].missing_events) | \(.[2].rss_held_mb) MB (\(.[2].streams_open) open, \(.[2].errors) errors) |"' \
        "$work/$name-latency.json" "$work/$name-send.json" "$work/$name-idle.json"
done
