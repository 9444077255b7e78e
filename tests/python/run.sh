#!/usr/bin/env bash
# Runs the Python black-box tests of the LLM proxy with the official OpenAI
# and Anthropic SDKs, then checks that the canary string reached no log.
#
# Usage: tests/python/run.sh [PYTEST_ARGS...] (from any directory).
# Environment:
#   AGYN_BIN            server binary, default target/debug/agyn
#   AGYN_TEST_LOG_DIR   directory for the server log and the canary check,
#                       default a new temporary directory
#   AGYN_TEST_CANARY    canary string, default agyn-canary-7c1f0e9b4d2a
#   AGYN_TEST_VENV      virtual environment, default .venv-tests in the
#                       repository root
#   PYTHON              interpreter that creates the venv, default python3
set -euo pipefail

repository_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repository_root"

suite_dir=tests/python
venv=${AGYN_TEST_VENV:-$repository_root/.venv-tests}
export AGYN_TEST_CANARY=${AGYN_TEST_CANARY:-agyn-canary-7c1f0e9b4d2a}
# A log directory that this script creates is deleted after a passing run
# and kept after a failure, for reading.
created_log_dir=
if [[ -z ${AGYN_TEST_LOG_DIR:-} ]]; then
  AGYN_TEST_LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/agyn-python-logs.XXXXXX")
  export AGYN_TEST_LOG_DIR
  created_log_dir=$AGYN_TEST_LOG_DIR
fi
export PYTHONDONTWRITEBYTECODE=1

bash "$suite_dir/venv.sh"

pytest_status=0
"$venv/bin/python" -m pytest "$suite_dir" "$@" || pytest_status=$?

canary_status=0
bash "$suite_dir/canary_check.sh" "$AGYN_TEST_LOG_DIR" "$AGYN_TEST_CANARY" || canary_status=$?

if ((pytest_status != 0)); then
  echo "FAIL pytest exited with $pytest_status; server log in $AGYN_TEST_LOG_DIR" >&2
  exit 1
fi
if ((canary_status != 0)); then
  exit "$canary_status"
fi
if [[ -n $created_log_dir ]]; then
  rm -rf "$created_log_dir"
fi
