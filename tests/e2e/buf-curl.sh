#!/usr/bin/env bash
# Checks the public listener of `agyn serve` with `buf curl` over the
# Connect, gRPC and gRPC-Web protocols. GetMe must return the bootstrap admin
# at `/` and under `/api`, both with the schema from proto/ and through server
# reflection. Missing, malformed, expired and revoked tokens must be rejected
# as unauthenticated. Reflection must list UsersGateway and hide the internal
# UsersService.
#
# Usage: tests/e2e/buf-curl.sh (from any directory). AGYN_BIN sets the
# server binary, default target/debug/agyn relative to the repository root.
# The script starts its own server on free loopback ports with a temporary
# data directory, prints one line per check and exits 1 on the first failure.
set -euo pipefail

repository_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repository_root"

agyn_bin=${AGYN_BIN:-target/debug/agyn}
buf=./node_modules/.bin/buf
protocols=(connect grpc grpcweb)
path_prefixes=("" "/api")
users_gateway=agynio.api.users.v1.UsersGateway
start_timeout_seconds=30
# A failed RPC makes buf curl exit with the gRPC code shifted left by 3 bits
# (`buf curl --help`, buf 1.75.0), and unauthenticated is code 16.
unauthenticated_exit_code=128

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/agyn-buf-curl.XXXXXX")
data_dir=$work_dir/data
server_log=$work_dir/server.log
out_file=$work_dir/stdout
err_file=$work_dir/stderr
server_pid=

cleanup() {
  local status=$?
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid"
    wait "$server_pid" || true
  fi
  if ((status != 0)) && [[ -s $server_log ]]; then
    echo "--- server log (last 50 lines) ---" >&2
    tail -n 50 "$server_log" >&2
  fi
  rm -rf "$work_dir"
}
trap cleanup EXIT

pass() {
  echo "ok   $1"
}

# Prints the failed check with the last buf curl output and exits.
fail() {
  echo "FAIL $1" >&2
  if [[ -n ${2:-} ]]; then
    echo "     $2" >&2
  fi
  if [[ -s $out_file ]]; then
    echo "--- stdout ---" >&2
    cat "$out_file" >&2
  fi
  if [[ -s $err_file ]]; then
    echo "--- stderr ---" >&2
    cat "$err_file" >&2
  fi
  exit 1
}

# Runs `buf curl` with the given arguments and stores its exit code in
# curl_status, its stdout in out_file and its stderr in err_file.
run_curl() {
  curl_status=0
  "$buf" curl --http2-prior-knowledge "$@" >"$out_file" 2>"$err_file" || curl_status=$?
}

# Prints the value at a dotted path, such as `token.id`, of the JSON in
# out_file, or an empty line when the path is missing.
json_field() {
  python3 - "$1" "$out_file" <<'EOF'
import json
import sys

path, file = sys.argv[1], sys.argv[2]
value = json.load(open(file))
for key in path.split("."):
    value = value.get(key, "") if isinstance(value, dict) else ""
print(value)
EOF
}

# Prints two distinct free loopback ports. They are released before the
# server binds them, so another process could take one in between.
free_ports() {
  python3 - <<'EOF'
import socket

sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))
for s in sockets:
    s.close()
EOF
}

start_server() {
  local port internal_port
  read -r port internal_port < <(free_ports)
  origin=http://127.0.0.1:$port
  # An inherited AGYN_DATABASE_URL would point the server at another
  # database than the fresh one in data_dir.
  env -u AGYN_DATABASE_URL "$agyn_bin" serve \
    --data-dir "$data_dir" \
    --listen "127.0.0.1:$port" \
    --internal-listen "127.0.0.1:$internal_port" \
    >"$server_log" 2>&1 &
  server_pid=$!

  # The server writes admin-token before it opens the public listener.
  local deadline=$((SECONDS + start_timeout_seconds))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      fail "start $agyn_bin" "the server exited; build it with \`cargo build -p agyn\` or set AGYN_BIN"
    fi
    if ((SECONDS > deadline)); then
      fail "start $agyn_bin" "the public listener on 127.0.0.1:$port was not ready within ${start_timeout_seconds} s"
    fi
    sleep 0.1
  done
  admin_token=$(<"$data_dir/admin-token")
  pass "server started on $origin"
}

# Checks that GetMe with the admin token returns the user `admin` with the
# cluster role CLUSTER_ROLE_ADMIN.
check_get_me() {
  local protocol=$1 prefix=$2 schema=$3
  local check="GetMe returns the admin ($protocol, ${prefix:-/}, schema from $schema)"
  local schema_args=()
  if [[ $schema == proto ]]; then
    schema_args=(--schema proto)
  fi
  run_curl --protocol "$protocol" "${schema_args[@]}" \
    -H "Authorization: Bearer $admin_token" -d '{}' \
    "$origin$prefix/$users_gateway/GetMe"
  if ((curl_status != 0)); then
    fail "$check" "buf curl exited with $curl_status"
  fi
  local username role
  username=$(json_field user.username)
  role=$(json_field clusterRole)
  if [[ $username != admin ]]; then
    fail "$check" "expected user.username \"admin\", got \"$username\""
  fi
  if [[ $role != CLUSTER_ROLE_ADMIN ]]; then
    fail "$check" "expected clusterRole \"CLUSTER_ROLE_ADMIN\", got \"$role\""
  fi
  pass "$check"
}

# Checks that GetMe with the given Authorization header value, or with no
# header when it is empty, fails with unauthenticated.
check_unauthenticated() {
  local protocol=$1 case_name=$2 authorization=$3
  local check="GetMe with $case_name is unauthenticated ($protocol)"
  local header_args=()
  if [[ -n $authorization ]]; then
    header_args=(-H "Authorization: $authorization")
  fi
  run_curl --protocol "$protocol" "${header_args[@]}" -d '{}' \
    "$origin/$users_gateway/GetMe"
  if ((curl_status != unauthenticated_exit_code)); then
    fail "$check" "expected buf curl exit code $unauthenticated_exit_code, got $curl_status"
  fi
  if ! grep -q unauthenticated "$err_file"; then
    fail "$check" "stderr does not contain \"unauthenticated\""
  fi
  pass "$check"
}

# Creates an API token for the admin and sets token_id and token_plaintext.
# An optional RFC 3339 time sets its expiry.
create_token() {
  local name=$1 expires_at=${2:-}
  local request="{\"name\":\"$name\"}"
  if [[ -n $expires_at ]]; then
    request="{\"name\":\"$name\",\"expiresAt\":\"$expires_at\"}"
  fi
  run_curl --protocol connect -H "Authorization: Bearer $admin_token" \
    -d "$request" "$origin/$users_gateway/CreateAPIToken"
  if ((curl_status != 0)); then
    fail "CreateAPIToken \"$name\"" "buf curl exited with $curl_status"
  fi
  token_id=$(json_field token.id)
  token_plaintext=$(json_field plaintextToken)
  if [[ -z $token_id || -z $token_plaintext ]]; then
    fail "CreateAPIToken \"$name\"" "the response has no token.id or plaintextToken"
  fi
  pass "CreateAPIToken \"$name\" returned token $token_id"
}

# Checks that GetMe accepts a token before it expires or is revoked, so that
# its later rejection comes from the expiry or the revocation.
check_token_accepted() {
  local check=$1 token=$2
  run_curl --protocol connect -H "Authorization: Bearer $token" -d '{}' \
    "$origin/$users_gateway/GetMe"
  if ((curl_status != 0)); then
    fail "$check" "buf curl exited with $curl_status"
  fi
  pass "$check"
}

check_service_list() {
  local protocol=$1 prefix=$2
  local check="reflection lists $users_gateway but not agynio.api.users.v1.UsersService ($protocol, ${prefix:-/})"
  run_curl --protocol "$protocol" --list-services "$origin$prefix"
  if ((curl_status != 0)); then
    fail "$check" "buf curl exited with $curl_status"
  fi
  if ! grep -qx "$users_gateway" "$out_file"; then
    fail "$check" "$users_gateway is not listed"
  fi
  if grep -qx agynio.api.users.v1.UsersService "$out_file"; then
    fail "$check" "the internal agynio.api.users.v1.UsersService is listed on the public listener"
  fi
  pass "$check"
}

# Prints the time two seconds from now in RFC 3339, UTC.
expiry_in_two_seconds() {
  python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(seconds=2)).isoformat(timespec="milliseconds").replace("+00:00", "Z"))'
}

start_server

for protocol in "${protocols[@]}"; do
  for prefix in "${path_prefixes[@]}"; do
    check_get_me "$protocol" "$prefix" proto
    check_get_me "$protocol" "$prefix" reflection
  done
done

for protocol in "${protocols[@]}"; do
  for prefix in "${path_prefixes[@]}"; do
    check_service_list "$protocol" "$prefix"
  done
done

create_token "buf-curl expiring" "$(expiry_in_two_seconds)"
expiring_token=$token_plaintext
check_token_accepted "GetMe accepts the expiring token before it expires" "$expiring_token"

create_token "buf-curl revoked"
revoked_token=$token_plaintext
check_token_accepted "GetMe accepts the token before it is revoked" "$revoked_token"
run_curl --protocol connect -H "Authorization: Bearer $admin_token" \
  -d "{\"id\":\"$token_id\"}" "$origin/$users_gateway/RevokeAPIToken"
if ((curl_status != 0)); then
  fail "RevokeAPIToken $token_id" "buf curl exited with $curl_status"
fi
pass "RevokeAPIToken $token_id"

for protocol in "${protocols[@]}"; do
  check_unauthenticated "$protocol" "no token" ""
  check_unauthenticated "$protocol" "a malformed token" "Bearer not-a-token"
  check_unauthenticated "$protocol" "a revoked token" "Bearer $revoked_token"
done

# The expiring token was created with a 2 s lifetime before the checks above.
sleep 3
for protocol in "${protocols[@]}"; do
  check_unauthenticated "$protocol" "an expired token" "Bearer $expiring_token"
done

echo "all checks passed"
