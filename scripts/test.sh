#!/usr/bin/env bash
# Runs the whole test suite: contract lint and client generation, Rust
# formatting and lints, unit and storage tests on SQLite and PostgreSQL,
# black-box tests of `agyn serve`, buf curl, the TypeScript client and the
# OpenAI and Anthropic Python SDKs, then a search of every server log for
# the canary secret.
#
# It installs the npm packages the tests need and starts PostgreSQL on
# 127.0.0.1:5432 if it is down.
# Set AGYN_TEST_POSTGRES_URL to use another PostgreSQL server.
set -euo pipefail

cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Tests keep their SQLite files, data directories and logs under the
# system temp directory, and leave them for inspection. This run gives
# them a directory of their own and removes it at the end, so that
# repeated runs do not fill the disk.
system_tmp="${TMPDIR:-/tmp}"
test_tmp=$(mktemp -d "$system_tmp/agyn-test.XXXXXX")
trap 'rm -rf "$test_tmp"' EXIT
export TMPDIR="$test_tmp"

export AGYN_TEST_POSTGRES_URL="${AGYN_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A single build from a clean checkout gains nothing from incremental
# state, which would only add to the size of target/.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Black-box tests write their trace-level server logs here, and store this
# canary as provider tokens and secret values; no log may contain it.
export AGYN_TEST_LOG_DIR="${AGYN_TEST_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/agyn-test-logs.XXXXXX")}"
export AGYN_TEST_CANARY="${AGYN_TEST_CANARY:-agyn-canary-7c1f0e9b4d2a}"

step "Disk space"
df -h . | tail -n 1
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "$free_kb" -lt $((10 * 1024 * 1024)) ]; then
    echo "warning: under 10 GiB free here; target/ grows to about 6 GiB during the tests" >&2
fi

step "PostgreSQL"
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
    fi
    for _ in $(seq 1 30); do
        pg_isready -q -h 127.0.0.1 -p 5432 && break
        sleep 1
    done
fi
pg_isready -h 127.0.0.1 -p 5432

step "Redis"
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    if command -v redis-server >/dev/null; then
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
            --dir "$system_tmp" --logfile "$system_tmp/agyn-test-redis.log"
    fi
    for _ in $(seq 1 30); do
        redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
        sleep 1
    done
fi
redis-cli -h 127.0.0.1 -p 6379 ping

step "npm packages"
npm ci --no-audit --no-fund --loglevel=error

step "buf lint"
npx buf lint

step "buf generate (TypeScript, local plugin) and type check"
rm -rf gen/ts
npm run --silent generate
npm run --silent typecheck

step "cargo fmt and clippy"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Python test environment (the SDK suites, and moto for the S3 tests)"
bash tests/python/venv.sh

step "cargo test (SQLite and PostgreSQL)"
cargo test --workspace --locked

step "buf curl against agyn serve"
cargo build --locked -p agyn
AGYN_BIN=target/debug/agyn bash tests/e2e/buf-curl.sh

step "TypeScript Connect client against agyn serve"
npm run --silent test:ts

step "OpenAI and Anthropic Python SDKs against the LLM proxy, then the log canary check"
AGYN_BIN=target/debug/agyn bash tests/python/run.sh

step "all tests passed"
