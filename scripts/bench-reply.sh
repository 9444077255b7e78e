#!/usr/bin/env bash
# Measures the time from a message to an agent until the agent's reply,
# cold (the message starts a workload) and warm (the workload already
# runs). The server is a release build of `agyn serve` on SQLite with its
# built-in runner, and the agent uses a scripted model. Prints the JSON
# result of `agyn-bench reply` and summary tables. The method is
# described in docs/benchmarks.md.
#
# Usage: bash scripts/bench-reply.sh
#
# Environment:
#   BENCH_CONVERSATIONS  conversations, each with one cold and one warm
#                        sample [default: 20]
#   BENCH_PAUSE          seconds between two samples [default: 1]
set -euo pipefail
cd "$(dirname "$0")/.."

conversations="${BENCH_CONVERSATIONS:-20}"
pause="${BENCH_PAUSE:-1}"
port=18094
internal_port=18095
url="http://127.0.0.1:$port"
work=$(mktemp -d)
data="$work/data"
server=""
trap 'stop_server; rm -rf "$work"' EXIT

cargo build --release --locked -p agyn -p agyn-bench
target="${CARGO_TARGET_DIR:-target}/release"
agyn="$target/agyn"
bench="$target/agyn-bench"

# Sends SIGTERM to the process group of every container that the
# built-in runner recorded as running, for containers left by a failed
# run. Each container leads its own process group.
stop_containers() {
    local manifest pid
    for manifest in "$data"/runner/workloads/*/manifest.json; do
        [ -f "$manifest" ] || continue
        for pid in $(jq -r '.containers[] | select(.state.status == "running") | .pid // empty' "$manifest"); do
            kill -TERM -- "-$pid" 2>/dev/null || true
        done
    done
}

stop_server() {
    if [ -n "$server" ]; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        server=""
        stop_containers
    fi
}

mkdir -m 700 "$data"
"$agyn" serve --data-dir "$data" --listen "127.0.0.1:$port" \
    --internal-listen "127.0.0.1:$internal_port" --log-level warn >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
    if [ -s "$data/admin-token" ] && curl -fsS "$url/healthz" >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done
if ! [ -s "$data/admin-token" ]; then
    echo "agyn serve did not start; its log:" >&2
    cat "$work/server.log" >&2
    exit 1
fi

echo "Load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$bench" reply --url "$url" --admin-token-file "$data/admin-token" \
    --runner-dir "$data/runner" --conversations "$conversations" --pause "$pause" \
    | tee "$work/reply.json"
echo "Load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

echo
echo "| | p50 | p90 | max | target | met (p50 / p90 / max) |"
echo "|---|---|---|---|---|---|"
jq -r '
    def yes: if . then "yes" else "no" end;
    def row(name; s): "| \(name) | \(s.send_to_reply.p50_ms) ms | \(s.send_to_reply.p90_ms) ms | \(s.send_to_reply.max_ms) ms | < \(s.target_ms) ms | \(s.p50_meets_target | yes) / \(s.p90_meets_target | yes) / \(s.max_meets_target | yes) |";
    row("cold, send → reply event"; .cold), row("warm, send → reply event"; .warm)
' "$work/reply.json"
echo
echo "| Cold phase | p50 | max |"
echo "|---|---|---|"
jq -r '(.cold_breakdown // [])[] | "| \(.phase) | \(.p50_ms) ms | \(.max_ms) ms |"' "$work/reply.json"
echo
echo "| Warm phase | p50 | max |"
echo "|---|---|---|"
jq -r '(.warm_breakdown // [])[] | "| \(.phase) | \(.p50_ms) ms | \(.max_ms) ms |"' "$work/reply.json"
