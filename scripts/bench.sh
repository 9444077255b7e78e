#!/usr/bin/env bash
# Measures authenticated UsersGateway/GetMe against the unauthenticated
# gRPC health check on one release server, over Connect JSON, Connect
# binary and gRPC. Prints requests/s, p50 and p99 latency per run, the
# GetMe/health throughput ratio, and the server's peak RSS (VmHWM).
#
# Usage: bash scripts/bench.sh [seconds per run, default 10] [rounds, default 3]
# Needs oha (https://github.com/hatoo/oha); installs oha 1.16.0 into
# .bench/ with cargo when it is not on PATH. The method is described in
# docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-10}"
rounds="${2:-3}"
port=18080
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

oha=$(command -v oha || true)
if [ -z "$oha" ]; then
    oha=.bench/bin/oha
    [ -x "$oha" ] || cargo install --locked oha@1.16.0 --root .bench
fi

cargo build --release --locked -p agyn
binary="${CARGO_TARGET_DIR:-target}/release/agyn"
taskset -c 0 "$binary" serve --data-dir "$work/data" \
    --listen "127.0.0.1:$port" --internal-listen "" --log-level warn &
server=$!
for _ in $(seq 1 100); do
    [ -s "$work/data/admin-token" ] && curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
token=$(cat "$work/data/admin-token")

printf '{}' > "$work/empty.json"
: > "$work/empty.bin"
printf '\x00\x00\x00\x00\x00' > "$work/empty.grpc"

health="http://127.0.0.1:$port/grpc.health.v1.Health/Check"
getme="http://127.0.0.1:$port/agynio.api.users.v1.UsersGateway/GetMe"

# run LABEL URL AUTH(yes|no) PROTOCOL
run() {
    local label=$1 url=$2 auth=$3 protocol=$4
    local args=(--no-tui --output-format json -z "${duration}s" -m POST)
    case "$protocol" in
        connect-json) args+=(-c 50 -T application/json -D "$work/empty.json") ;;
        connect-proto) args+=(-c 50 -T application/proto -D "$work/empty.bin") ;;
        grpc) args+=(--http2 -c 4 -p 16 -T application/grpc -H 'te: trailers' -D "$work/empty.grpc") ;;
    esac
    if [ "$auth" = yes ]; then
        args+=(-H "authorization: Bearer $token")
    fi
    taskset -c 1 "$oha" "${args[@]}" "$url" > "$work/$label.json"
    python3 - "$work/$label.json" "$label" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
summary = report["summary"]
percentiles = report["latencyPercentiles"]
codes = report.get("statusCodeDistribution", {})
print(f"{sys.argv[2]:<28} {summary['requestsPerSec']:>10.0f} rps  "
      f"p50 {percentiles['p50'] * 1000:6.2f} ms  p99 {percentiles['p99'] * 1000:6.2f} ms  "
      f"status {codes}")
PY
}

# A short warm-up fills the token and user caches and the allocator.
run warmup "$getme" yes connect-proto > /dev/null

# The two targets alternate, round after round, so that drift in the
# machine's speed affects both alike; the ratio uses the mean of the rounds.
for round in $(seq 1 "$rounds"); do
    for protocol in connect-json connect-proto grpc; do
        run "health-$protocol-$round" "$health" no "$protocol"
        run "getme-$protocol-$round" "$getme" yes "$protocol"
    done
done

python3 - "$work" "$rounds" <<'PY'
import json, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def mean_rps(target, protocol):
    values = [json.load(open(f"{work}/{target}-{protocol}-{r}.json"))["summary"]["requestsPerSec"]
              for r in range(1, rounds + 1)]
    return sum(values) / len(values)
for protocol in ["connect-json", "connect-proto", "grpc"]:
    health = mean_rps("health", protocol)
    getme = mean_rps("getme", protocol)
    print(f"GetMe / health, {protocol:<13} {getme:8.0f} / {health:8.0f} rps = {getme / health * 100:5.1f} %")
PY
grep VmHWM "/proc/$server/status"
