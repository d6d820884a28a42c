#!/usr/bin/env bash
# Two drover nodes on one PostgreSQL and one NATS JetStream, driven by clients nobody here wrote:
# drg manages the registry through node A; a device publishes with mosquitto_pub to node A; an
# application reads with mosquitto_sub from node B's MQTT integration and with `drg stream`
# from node B; `drg cmd` through node B reaches the device subscribed on node A.
# Needs DROVER_TEST_DATABASE_URL and DROVER_TEST_NATS_URL (.ci/run sets them).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v mosquitto_sub >/dev/null || fail "mosquitto_sub is not installed (apt install mosquitto-clients)"
command -v psql >/dev/null || fail "psql is not installed (apt install postgresql-client)"
[[ -n "${DROVER_TEST_DATABASE_URL:-}" ]] || fail "DROVER_TEST_DATABASE_URL is not set (PostgreSQL for the cluster)"
[[ -n "${DROVER_TEST_NATS_URL:-}" ]] || fail "DROVER_TEST_NATS_URL is not set (NATS JetStream for the cluster)"
build_drover

SCHEMA="drover_interop_$$_$RANDOM"
PREFIX="interop$$$RANDOM"
ADMIN_TOKEN="$(make_drg_token)"
NODE_PIDS=()

cleanup_cluster() {
    for pid in "${NODE_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${NODE_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    psql "$DROVER_TEST_DATABASE_URL" -qc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
    python3 "$INTEROP_DIR/jetstream_delete.py" "$DROVER_TEST_NATS_URL" "$PREFIX" || true
}
trap 'rc=$?; cleanup_cluster; (exit $rc); _interop_cleanup' EXIT

# start_node NAME: starts a node; sets <NAME>_API, <NAME>_HTTP, <NAME>_MQTT, <NAME>_IMQTT.
start_node() {
    local name=$1 api http mqtt imqtt
    read -r api http mqtt imqtt <<<"$(free_ports 4)"
    mkdir -p "$WORK_DIR/$name"
    step "starting node $name on http://127.0.0.1:$api"
    "$DROVER_BIN" serve --data-dir "$WORK_DIR/$name" --api-addr "127.0.0.1:$api" \
        --http-addr "127.0.0.1:$http" --https-addr off --mqtt-addr "127.0.0.1:$mqtt" \
        --mqtts-addr off --integration-mqtt-addr "127.0.0.1:$imqtt" --integration-mqtts-addr off \
        --instance "$name" --admin-token "$ADMIN_TOKEN" \
        --database-url "$DROVER_TEST_DATABASE_URL" --database-schema "$SCHEMA" \
        --nats-url "$DROVER_TEST_NATS_URL" --nats-prefix "$PREFIX" \
        >>"$WORK_DIR/$name.log" 2>&1 </dev/null &
    NODE_PIDS+=($!)
    local deadline=$((SECONDS + 60))
    until curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$api/health/ready"; do
        kill -0 "${NODE_PIDS[-1]}" 2>/dev/null || fail "node $name exited: $(tail -5 "$WORK_DIR/$name.log")"
        ((SECONDS < deadline)) || fail "node $name not ready within 60 s"
        sleep 0.2
    done
    printf -v "${name}_API" '%s' "http://127.0.0.1:$api"
    printf -v "${name}_HTTP" '%s' "http://127.0.0.1:$http"
    printf -v "${name}_MQTT" '%s' "$mqtt"
    printf -v "${name}_IMQTT" '%s' "$imqtt"
    ok "node $name is ready"
}

start_node A
start_node B

step "drg manages the registry through node A"
DROVER_URL="$A_API"
drg_login admin "$ADMIN_TOKEN"
run_ok "create app" drg create app fleet
run_ok "create device" drg create device dev1 --app fleet
run_ok "set password" drg set password dev1 's3cret' --app fleet
http GET "$B_API/api/registry/v1alpha1/apps/fleet/devices/dev1" -u "admin:$ADMIN_TOKEN"
expect_status 200 "node B sees the device created through node A"

step "mosquitto_pub to node A, mosquitto_sub on node B's MQTT integration"
sub_out="$WORK_DIR/sub.out"
mosquitto_sub -V mqttv5 -h 127.0.0.1 -p "$B_IMQTT" -i backend -u admin -P "$ADMIN_TOKEN" \
    -t 'app/fleet' -q 1 -C 1 -W 30 >"$sub_out" 2>&1 &
sub=$!
# Publish until the subscriber got one (it subscribes asynchronously).
deadline=$((SECONDS + 30))
n=0
while kill -0 "$sub" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "mosquitto_sub on node B got nothing: $(cat "$sub_out")"
    n=$((n + 1))
    mosquitto_pub -V mqttv311 -h 127.0.0.1 -p "$A_MQTT" -i dev1 -u dev1@fleet -P s3cret \
        -t temperature -q 1 -m "{\"n\":$n}" || fail "mosquitto_pub to node A failed"
    sleep 0.3
done
wait "$sub" || fail "mosquitto_sub failed: $(cat "$sub_out")"
LAST_OUTPUT="$(cat "$sub_out")"
assert_contains "$LAST_OUTPUT" '"device":"dev1"' "node B delivered the event published to node A"
assert_contains "$LAST_OUTPUT" '"instance":"A"' "… which node A ingested"

step "drg stream from node B"
DROVER_URL="$B_API"
drg_login admin "$ADMIN_TOKEN"
stream_out="$WORK_DIR/stream.out"
drg stream --app fleet -n 1 >"$stream_out" 2>&1 &
streamer=$!
deadline=$((SECONDS + 30))
while kill -0 "$streamer" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "drg stream on node B got nothing: $(cat "$stream_out")"
    curl -sf -o /dev/null -u 'dev1@fleet:s3cret' -H 'content-type: application/json' \
        -d '{"via":"http"}' "$A_HTTP/v1/telemetry" || fail "HTTP telemetry to node A failed"
    sleep 0.3
done
wait "$streamer" || true
LAST_OUTPUT="$(cat "$stream_out")"
assert_contains "$LAST_OUTPUT" '"via": "http"' "drg stream on node B shows HTTP telemetry sent to node A"
assert_contains "$LAST_OUTPUT" '"instance": "A"' "… ingested by node A"

step "drg cmd through node B reaches the device on node A"
inbox="$WORK_DIR/inbox.out"
mosquitto_sub -V mqttv311 -h 127.0.0.1 -p "$A_MQTT" -i dev1 -u dev1@fleet -P s3cret \
    -t 'command/inbox//#' -q 1 -C 1 -W 30 -v >"$inbox" 2>&1 &
device=$!
deadline=$((SECONDS + 20))
until drg cmd dev1 set-led --app fleet -p '{"on":true}' >"$WORK_DIR/cmd.out" 2>&1; do
    ((SECONDS < deadline)) || fail "drg cmd through node B never got through: $(cat "$WORK_DIR/cmd.out")"
    sleep 0.2
done
wait "$device" || fail "the device on node A got no command: $(cat "$inbox")"
assert_contains "$(cat "$inbox")" 'command/inbox//set-led {"on":true}' "the device on node A got the command sent through node B"

step "a credential change through node B is enforced on node A"
# (drg set password adds a credential; drover's CLI replaces them.)
export DROVER_CONFIG_DIR="$WORK_DIR/drover-cli"
run_ok "drover login to node B" "$DROVER_BIN" login "$B_API" --token "admin:$ADMIN_TOKEN"
run_ok "replace the password" "$DROVER_BIN" device set password dev1 'n3w' --app fleet
run_fail "the old password is refused by node A" \
    mosquitto_pub -V mqttv311 -h 127.0.0.1 -p "$A_MQTT" -i dev1 -u dev1@fleet -P s3cret -t t -q 1 -m x
run_ok "the new one is accepted by node A" \
    mosquitto_pub -V mqttv311 -h 127.0.0.1 -p "$A_MQTT" -i dev1 -u dev1@fleet -P n3w -t t -q 1 -m x

echo
echo "test_cluster: all checks passed"
