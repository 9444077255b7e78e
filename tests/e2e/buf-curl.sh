#!/usr/bin/env bash
# Checks the public listener of `agyn serve` with `buf curl` over the
# Connect, gRPC and gRPC-Web protocols. GetMe must return the bootstrap admin
# at `/` and under `/api`, both with the schema from proto/ and through server
# reflection. Missing, malformed, expired and revoked tokens must be rejected
# as unauthenticated. Reflection must list UsersGateway and hide the internal
# UsersService. Over TLS on the same port, GetMe must work with a bearer
# token and with an enrolled device's client certificate. On the internal
# listener, the admin component certificate must reach AuthorizationService
# over gRPC, while no certificate and a device certificate are rejected.
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
# permission_denied is code 7.
permission_denied_exit_code=56

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

# Runs `buf curl` over TLS, trusting only the platform CA, like run_curl.
run_tls_curl() {
  curl_status=0
  "$buf" curl --cacert "$data_dir/ca.crt" "$@" >"$out_file" 2>"$err_file" || curl_status=$?
}

start_server() {
  local port
  read -r port internal_port < <(free_ports)
  origin=http://127.0.0.1:$port
  tls_origin=https://127.0.0.1:$port
  internal_origin=https://127.0.0.1:$internal_port
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

# Checks GetMe over TLS on the public port, authenticated by the given
# arguments (a bearer header or a client certificate).
check_tls_get_me() {
  local protocol=$1 credential=$2
  shift 2
  local check="GetMe over TLS with $credential returns the admin ($protocol)"
  run_tls_curl --protocol "$protocol" "$@" -d '{}' "$tls_origin/$users_gateway/GetMe"
  if ((curl_status != 0)); then
    fail "$check" "buf curl exited with $curl_status"
  fi
  local username
  username=$(json_field user.username)
  if [[ $username != admin ]]; then
    fail "$check" "expected user.username \"admin\", got \"$username\""
  fi
  pass "$check"
}

# Registers a device, makes its key and certificate request with openssl,
# and exchanges them at /enroll. Writes device.key and device.crt to
# work_dir.
enroll_device() {
  run_curl --protocol connect -H "Authorization: Bearer $admin_token" \
    -d '{"name":"buf-curl device"}' "$origin/$users_gateway/CreateDevice"
  if ((curl_status != 0)); then
    fail "CreateDevice" "buf curl exited with $curl_status"
  fi
  local enrollment_token
  enrollment_token=$(json_field enrollmentToken)
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work_dir/device.key" -subj /CN=buf-curl -out "$work_dir/device.csr" 2>"$err_file" ||
    fail "openssl creates the device key and certificate request"
  python3 -c 'import json, sys; print(json.dumps({"enrollment_token": sys.argv[1], "csr_pem": open(sys.argv[2]).read()}))' \
    "$enrollment_token" "$work_dir/device.csr" >"$work_dir/enroll.json"
  local status
  status=$(curl -sS -o "$out_file" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary "@$work_dir/enroll.json" "$origin/enroll")
  if [[ $status != 200 ]]; then
    fail "POST /enroll returns a certificate" "HTTP $status"
  fi
  json_field certificate_pem >"$work_dir/device.crt"
  pass "device enrolled with an openssl P-256 key"
}

# Checks an internal method with the given client certificate and key
# (none when empty) against the expected buf curl exit code.
check_internal() {
  local check=$1 expected=$2 cert=$3 key=$4
  local cert_args=()
  if [[ -n $cert ]]; then
    cert_args=(--cert "$cert" --key "$key")
  fi
  run_tls_curl --protocol grpc --schema proto "${cert_args[@]}" \
    -d '{"user":"identity:nobody","relation":"admin","object":"cluster:global"}' \
    "$internal_origin/agynio.api.authorization.v1.AuthorizationService/Check"
  if ((curl_status != expected)); then
    fail "$check" "expected buf curl exit code $expected, got $curl_status"
  fi
  pass "$check"
}

for protocol in "${protocols[@]}"; do
  check_tls_get_me "$protocol" "a bearer token" -H "Authorization: Bearer $admin_token"
done
enroll_device
for protocol in "${protocols[@]}"; do
  check_tls_get_me "$protocol" "a device certificate" \
    --cert "$work_dir/device.crt" --key "$work_dir/device.key"
done

check_internal "the internal listener accepts the admin component certificate (grpc)" 0 \
  "$data_dir/admin-client.crt" "$data_dir/admin-client.key"
# buf curl leaves out fields with default values, so false prints as {}.
if [[ $(json_field allowed) == True ]]; then
  fail "Check of an unknown identity is not allowed" "got allowed: true"
fi
check_internal "the internal listener rejects a call without a certificate (grpc)" \
  "$unauthenticated_exit_code" "" ""
check_internal "the internal listener rejects a device certificate (grpc)" \
  "$permission_denied_exit_code" "$work_dir/device.crt" "$work_dir/device.key"

run_curl --protocol grpc -H "Authorization: Bearer $admin_token" -d '{"name":"buf curl"}' \
  "$origin/agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization"
if ((curl_status != 0)); then
  fail "CreateOrganization (grpc)" "buf curl exited with $curl_status"
fi
if [[ $(json_field organization.slug) != buf-curl ]]; then
  fail "CreateOrganization derives the slug buf-curl (grpc)" "got \"$(json_field organization.slug)\""
fi
pass "CreateOrganization derives the slug buf-curl (grpc)"

# Subscribe is server streaming: the stream stays open, so buf curl runs
# under a time limit and the check reads the ready message it printed.
for protocol in "${protocols[@]}"; do
  check="Subscribe sends ready first with the :me room rewritten ($protocol)"
  curl_status=0
  timeout 3 "$buf" curl --http2-prior-knowledge --protocol "$protocol" \
    -H "Authorization: Bearer $admin_token" -d '{"rooms":["thread_participant:me"]}' \
    "$origin/agynio.api.notifications.v1.NotificationsGateway/Subscribe" \
    >"$out_file" 2>"$err_file" || curl_status=$?
  # 124 is timeout's exit code: the stream was still open, as it should be.
  if ((curl_status != 124)); then
    fail "$check" "expected the stream to stay open, buf curl exited with $curl_status"
  fi
  if ! grep -q '"subscriptionId"' "$out_file" || ! grep -q '"thread_participant:' "$out_file" ||
    grep -q '"thread_participant:me"' "$out_file"; then
    fail "$check" "no ready message with the rewritten room"
  fi
  pass "$check"
done

echo "all checks passed"
