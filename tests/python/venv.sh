#!/usr/bin/env bash
# Creates the Python test environment (.venv-tests in the repository root,
# or AGYN_TEST_VENV) and installs tests/python/requirements.txt into it.
# It reinstalls only when the requirements changed since the last run.
# The Python suite uses it, and so do the Rust S3 tests, which run moto
# from it.
#
# Usage: tests/python/venv.sh (from any directory). PYTHON names the
# interpreter that creates the environment, default python3.
set -euo pipefail

repository_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${AGYN_TEST_VENV:-$repository_root/.venv-tests}
requirements=$repository_root/tests/python/requirements.txt

if [[ ! -x $venv/bin/python ]]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
stamp=$venv/.requirements.sha256
wanted=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$wanted" >"$stamp"
fi
