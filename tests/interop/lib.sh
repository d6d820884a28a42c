# shellcheck shell=bash
# Shared helpers for the interop tests. Source it from a test_*.sh script:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   start_drover [ARGS...]  # -> DROVER_URL, ADMIN_TOKEN, DROVER_PID, WORK_DIR
#
# Environment:
#   DROVER_BIN   path to a built `drover` binary; when unset, lib.sh runs
#                `cargo build -p drover` (debug profile: `cargo test` already built most of it)
#                and uses target/debug/drover.
#   KEEP_WORK=1  keep the temporary directory (server data dir, server log, drg config).
#
# Conventions: every assertion either passes silently or calls `fail`, which prints what was
# expected, what happened, the last command output and the server log tail, then exits 1.

set -euo pipefail

INTEROP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$INTEROP_DIR/../.." && pwd)"
TEST_NAME="$(basename "${BASH_SOURCE[1]:-$0}" .sh)"

export PATH="$HOME/.cargo/bin:$PATH"

# ---------------------------------------------------------------------------------------------
# output and assertions

LAST_OUTPUT=""   # combined stdout+stderr of the last run_ok/run_fail/capture
LAST_RC=0

step() { printf '\n--- %s: %s\n' "$TEST_NAME" "$*"; }
ok() { printf '    ok: %s\n' "$*"; }

fail() {
    printf '\nFAIL [%s]: %s\n' "$TEST_NAME" "$*" >&2
    if [[ -n "$LAST_OUTPUT" ]]; then
        printf -- '--- last command output (exit %s):\n%s\n' "$LAST_RC" "$LAST_OUTPUT" >&2
    fi
    exit 1
}

# capture CMD...: run a command, keep its exit code and combined output; never fails.
capture() {
    set +e
    LAST_OUTPUT="$("$@" 2>&1)"
    LAST_RC=$?
    set -e
}

# run_ok DESCRIPTION CMD...: the command must exit 0.
run_ok() {
    local desc="$1"
    shift
    capture "$@"
    [[ "$LAST_RC" -eq 0 ]] || fail "$desc: expected exit 0, got $LAST_RC from: $*"
    ok "$desc"
}

# run_fail DESCRIPTION CMD...: the command must exit non-zero.
run_fail() {
    local desc="$1"
    shift
    capture "$@"
    [[ "$LAST_RC" -ne 0 ]] || fail "$desc: expected a non-zero exit from: $*"
    ok "$desc"
}

# assert_contains HAYSTACK NEEDLE DESCRIPTION (fixed string match)
assert_contains() {
    [[ "$1" == *"$2"* ]] || fail "$3: expected output to contain '$2'"
    ok "$3"
}

assert_not_contains() {
    [[ "$1" != *"$2"* ]] || fail "$3: expected output NOT to contain '$2'"
    ok "$3"
}

# assert_eq ACTUAL EXPECTED DESCRIPTION
assert_eq() {
    [[ "$1" == "$2" ]] || fail "$3: expected '$2', got '$1'"
    ok "$3"
}

# assert_match ACTUAL EXTENDED_REGEX DESCRIPTION
assert_match() {
    [[ "$1" =~ $2 ]] || fail "$3: '$1' does not match /$2/"
    ok "$3"
}

# ---------------------------------------------------------------------------------------------
# JSON (python3 instead of jq: one dependency fewer, and python3 is needed anyway)

# json_get EXPR: read JSON on stdin and print the Python expression EXPR evaluated with the
# document bound to `d` (strings are printed raw, everything else as compact JSON).
# Example: echo "$body" | json_get 'd["metadata"]["name"]'
json_get() {
    python3 -c '
import json, sys
d = json.load(sys.stdin)
v = eval(sys.argv[1], {"d": d})
print(v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":")))
' "$1"
}

# json_names: read a JSON array of resources on stdin, print their sorted metadata.name values
# space-separated (empty line for an empty array).
json_names() {
    python3 -c '
import json, sys
print(" ".join(sorted(r["metadata"]["name"] for r in json.load(sys.stdin))))
'
}

# ---------------------------------------------------------------------------------------------
# tokens

# make_drg_token: print a fresh token in Drogue's format
#   drg_<6 alnum>_<30 alnum><base62 CRC32 of everything before it, unpadded: 1-6 chars>
make_drg_token() {
    python3 -c '
import secrets, string, zlib
alnum = string.ascii_letters + string.digits
b62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
body = "drg_" + "".join(secrets.choice(alnum) for _ in range(6)) + "_" \
       + "".join(secrets.choice(alnum) for _ in range(30))
n, s = zlib.crc32(body.encode()), ""
while n:
    n, r = divmod(n, 62)
    s = b62[r] + s
print(body + s)
'
}

# check_drg_token TOKEN: exit 0 when TOKEN has the drg format and a valid checksum.
check_drg_token() {
    python3 -c '
import re, string, sys, zlib
t = sys.argv[1]
m = re.fullmatch(r"(drg_[A-Za-z0-9]{6}_[A-Za-z0-9]{30})([A-Za-z0-9]{1,6})", t)
if not m:
    sys.exit("token does not match drg_<6>_<30><1-6 checksum>: " + t)
b62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
n, s = zlib.crc32(m.group(1).encode()), ""
while n:
    n, r = divmod(n, 62)
    s = b62[r] + s
# Drogue encodes the CRC32 in base62 without padding (1 to 6 characters).
if s != m.group(2):
    sys.exit("bad checksum: expected %s, got %s" % (s, m.group(2)))
' "$1"
}

# ---------------------------------------------------------------------------------------------
# HTTP (curl)

HTTP_STATUS=""
HTTP_BODY=""

# http METHOD PATH|URL [CURL_ARGS...]: request $DROVER_URL$PATH (or an absolute URL); sets
# HTTP_STATUS and HTTP_BODY. Fails only if curl itself fails; assert on HTTP_STATUS.
http() {
    local method="$1" path="$2"
    shift 2
    local url="$path"
    [[ "$path" == http://* || "$path" == https://* ]] || url="$DROVER_URL$path"
    local body_file="$WORK_DIR/http-body"
    set +e
    HTTP_STATUS="$(curl -sS --max-time 30 -o "$body_file" -w '%{http_code}' -X "$method" "$@" \
        "$url")"
    local rc=$?
    set -e
    HTTP_BODY="$(cat "$body_file" 2>/dev/null || true)"
    LAST_OUTPUT="$method $path -> $HTTP_STATUS $HTTP_BODY"
    LAST_RC=$rc
    [[ $rc -eq 0 ]] || fail "curl $method $path failed (curl exit $rc)"
}

# http_as USER TOKEN METHOD PATH [CURL_ARGS...]: same with Basic auth.
http_as() {
    local user="$1" token="$2"
    shift 2
    http "$1" "$2" -u "$user:$token" "${@:3}"
}

# expect_status CODE DESCRIPTION
expect_status() {
    [[ "$HTTP_STATUS" == "$1" ]] || fail "$2: expected HTTP $1, got $HTTP_STATUS"
    ok "$2"
}

# create_user NAME: as admin, create a user; prints the new user's token.
create_user() {
    http_as admin "$ADMIN_TOKEN" POST /api/admin/v1alpha1/users \
        -H 'content-type: application/json' -d "{\"name\":\"$1\"}"
    expect_status 201 "admin creates user $1" >&2
    local name token
    name="$(printf '%s' "$HTTP_BODY" | json_get 'd["name"]')" || fail "user response is not JSON"
    token="$(printf '%s' "$HTTP_BODY" | json_get 'd["token"]')" || fail "user response has no token"
    [[ "$name" == "$1" ]] || fail "create user: expected name '$1', got '$name'"
    printf '%s\n' "$token"
}

# ---------------------------------------------------------------------------------------------
# drg, isolated: its own config file, never the user's ~/.config/drg_config.yaml

DRG_REAL="$(command -v drg || true)"

# drg ARGS...: the real drg with an isolated config, a time limit and no inherited defaults.
drg() {
    [[ -n "$DRG_REAL" ]] || fail "drg is not installed (cargo install drg --debug)"
    env -u DRG_APP -u DRG_CONTEXT RUST_BACKTRACE=0 DRGCFG="$DRG_CONFIG" \
        XDG_CONFIG_HOME="$WORK_DIR/xdg" \
        timeout 60 "$DRG_REAL" --config "$DRG_CONFIG" "$@"
}

# drg_login USER TOKEN: log drg in to the test server.
drg_login() {
    run_ok "drg login as $1" drg login "$DROVER_URL" --access-token "$1:$2"
    assert_contains "$LAST_OUTPUT" "Successfully authenticated" "drg reports the login"
}

# ---------------------------------------------------------------------------------------------
# server lifecycle

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/drover-interop.XXXXXX")"
DRG_CONFIG="$WORK_DIR/drg_config.yaml"
DROVER_PID=""
DROVER_URL=""
DROVER_HTTP_URL=""
DROVER_HTTPS_URL=""
DROVER_DATA=""
DROVER_MQTT_PORT=""
DROVER_MQTTS_PORT=""
DROVER_INTEGRATION_PORT=""
DROVER_INTEGRATION_TLS_PORT=""
DROVER_LOG="$WORK_DIR/drover.log"
ADMIN_TOKEN=""

# make_ca BASE CN: a CA (EC P-256) in BASE.pem with its key in BASE-key.pem, made by openssl.
make_ca() {
    run_ok "CA $2" openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1-key.pem" -out "$1.pem" -days 2 -subj "/CN=$2"
}

# make_client_cert NAME SUBJECT CA_BASE: NAME.pem and NAME-key.pem, a TLS client certificate for
# SUBJECT ("/CN=dev/O=app") issued by the CA of make_ca.
make_client_cert() {
    run_ok "key and CSR of $1" openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1-key.pem" -out "$1.csr" -subj "$2"
    printf 'extendedKeyUsage=clientAuth\n' >"$1.ext"
    run_ok "certificate of $1" openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3-key.pem" \
        -CAcreateserial -out "$1.pem" -days 2 -extfile "$1.ext"
}

free_port() {
    free_ports 1
}

# free_ports N: N distinct free ports on 127.0.0.1 (held open together while they are picked).
free_ports() {
    python3 -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
' "$1"
}

build_drover() {
    if [[ -n "${DROVER_BIN:-}" ]]; then
        [[ -x "$DROVER_BIN" ]] || fail "DROVER_BIN=$DROVER_BIN is not executable"
        return
    fi
    step "building drover (debug)"
    (cd "$REPO_ROOT" && cargo build --quiet -p drover) || fail "cargo build -p drover failed"
    DROVER_BIN="$REPO_ROOT/target/debug/drover"
    export DROVER_BIN
}

stop_drover() {
    [[ -n "$DROVER_PID" ]] || return 0
    if kill -0 "$DROVER_PID" 2>/dev/null; then
        kill -TERM "$DROVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$DROVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$DROVER_PID" 2>/dev/null; then
            echo "drover (pid $DROVER_PID) ignored SIGTERM for 10s; killing it" >&2
            kill -KILL "$DROVER_PID" 2>/dev/null || true
        fi
    fi
    wait "$DROVER_PID" 2>/dev/null || true
    DROVER_PID=""
}

_interop_cleanup() {
    local rc=$?
    stop_drover
    if [[ $rc -ne 0 && -s "$DROVER_LOG" ]]; then
        echo "--- last 40 lines of the drover log ($DROVER_LOG):" >&2
        tail -n 40 "$DROVER_LOG" >&2 || true
    fi
    if [[ "${KEEP_WORK:-0}" == 1 || $rc -ne 0 ]]; then
        echo "(work directory kept: $WORK_DIR)" >&2
    else
        rm -rf "$WORK_DIR"
    fi
    exit $rc
}
trap _interop_cleanup EXIT
trap 'exit 130' INT TERM

# start_drover [SERVE_ARGS...]: start `drover serve` on a free port with a fresh data dir and
# admin token (and the given extra arguments), and wait (at most 60 s) until
# /.well-known/drogue-version answers.
# Every listener gets its own free port (never a fixed one).
# Sets DROVER_URL, DROVER_HTTP_URL, DROVER_HTTPS_URL (development CA: $DROVER_DATA/tls/ca.pem),
# DROVER_DATA, DROVER_PID, ADMIN_TOKEN.
start_drover() {
    build_drover
    local port http_port https_port mqtt_port mqtts_port imqtt_port imqtts_port data_dir
    read -r port http_port https_port mqtt_port mqtts_port imqtt_port imqtts_port <<<"$(free_ports 7)"
    data_dir="$WORK_DIR/data"
    mkdir -p "$data_dir"
    ADMIN_TOKEN="${ADMIN_TOKEN:-$(make_drg_token)}"
    DROVER_URL="http://127.0.0.1:$port"
    DROVER_HTTP_URL="http://127.0.0.1:$http_port"
    DROVER_HTTPS_URL="https://localhost:$https_port"
    DROVER_DATA="$data_dir"
    DROVER_MQTT_PORT="$mqtt_port"
    DROVER_MQTTS_PORT="$mqtts_port"
    DROVER_INTEGRATION_PORT="$imqtt_port"
    DROVER_INTEGRATION_TLS_PORT="$imqtts_port"

    step "starting drover on $DROVER_URL"
    "$DROVER_BIN" serve --data-dir "$data_dir" --api-addr "127.0.0.1:$port" \
        --http-addr "127.0.0.1:$http_port" --https-addr "127.0.0.1:$https_port" \
        --mqtt-addr "127.0.0.1:$mqtt_port" --mqtts-addr "127.0.0.1:$mqtts_port" \
        --integration-mqtt-addr "127.0.0.1:$imqtt_port" --integration-mqtts-addr "127.0.0.1:$imqtts_port" \
        --admin-token "$ADMIN_TOKEN" "$@" >>"$DROVER_LOG" 2>&1 </dev/null &
    DROVER_PID=$!

    local deadline=$((SECONDS + 60))
    until curl -sf --max-time 2 -o /dev/null "$DROVER_URL/.well-known/drogue-version"; do
        if ! kill -0 "$DROVER_PID" 2>/dev/null; then
            local rc=0
            wait "$DROVER_PID" || rc=$?
            DROVER_PID=""
            fail "drover exited (status $rc) before answering on $DROVER_URL"
        fi
        ((SECONDS < deadline)) || fail "drover did not answer $DROVER_URL/.well-known/drogue-version within 60s"
        sleep 0.2
    done
    ok "drover is up (pid $DROVER_PID)"
}
