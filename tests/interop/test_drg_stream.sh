#!/usr/bin/env bash
# Telemetry with real clients: a device publishes with curl to the HTTP endpoint, the
# application watches with `drg stream` (WebSocket integration found via the info document).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start_drover
ALICE_TOKEN="$(create_user alice)"
drg_login alice "$ALICE_TOKEN"

step "registry"
run_ok "create app" drg create app telemetry-app
run_ok "create device" drg create device sensor-1 --app telemetry-app
run_ok "set password" drg set password sensor-1 's3cret' --app telemetry-app
run_ok "create gateway" drg create device gw-1 --app telemetry-app
run_ok "gateway password" drg set password gw-1 'gwpass' --app telemetry-app
run_ok "sensor-1 names gw-1 as gateway" drg set gateway sensor-1 gw-1 --app telemetry-app

step "curl publishes over HTTP"
http POST "$DROVER_HTTP_URL/v1/telemetry" -u 'sensor-1@telemetry-app:s3cret' \
    -H 'content-type: application/json' -d '{"temp":21}'
expect_status 202 "device publishes (202 Accepted)"
http POST "$DROVER_HTTP_URL/v1/telemetry" -u 'sensor-1@telemetry-app:wrong' -d '{}'
expect_status 403 "wrong password is refused (403)"
http POST "$DROVER_HTTP_URL/v1/telemetry?as=sensor-1" -u 'gw-1@telemetry-app:gwpass' -d '{"via":"gw"}'
expect_status 202 "gateway publishes for sensor-1"
http POST "$DROVER_HTTP_URL/v1/telemetry" -u 'sensor-1@telemetry-app:s3cret' \
    -H 'content-type: application/json' -d '{not json'
expect_status 406 "unparsable JSON is refused (406)"

step "drg stream receives live telemetry"
out="$WORK_DIR/stream.out"
drg stream --app telemetry-app -n 2 >"$out" 2>&1 &
stream_pid=$!
# drg starts live: keep publishing until it has seen two events (or give up after 30 s).
deadline=$((SECONDS + 30))
n=0
while kill -0 "$stream_pid" 2>/dev/null; do
    ((SECONDS < deadline)) || { kill "$stream_pid" 2>/dev/null || true; fail "drg stream got no events in 30 s: $(cat "$out")"; }
    n=$((n + 1))
    curl -sf -o /dev/null -u 'sensor-1@telemetry-app:s3cret' -H 'content-type: application/json' \
        -d "{\"n\":$n}" "$DROVER_HTTP_URL/v1/telemetry" || fail "publish $n failed"
    sleep 0.3
done
rc=0
wait "$stream_pid" || rc=$?
LAST_OUTPUT="$(cat "$out")"
[[ $rc -eq 0 ]] || fail "drg stream exited with $rc"
ok "drg stream exited after two events"
assert_contains "$LAST_OUTPUT" '"type": "io.drogue.event.v1"' "events are CloudEvents"
assert_contains "$LAST_OUTPUT" '"device": "sensor-1"' "events name the device"
assert_contains "$LAST_OUTPUT" '"subject": "telemetry"' "events carry the channel"
assert_contains "$LAST_OUTPUT" '"n":' "events carry the payload"

step "isolation"
BOB_TOKEN="$(create_user bob)"
http GET "/api/integrations/v1alpha1/ws/telemetry-app" -u "bob:$BOB_TOKEN" \
    -H 'connection: upgrade' -H 'upgrade: websocket' -H 'sec-websocket-version: 13' \
    -H 'sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ=='
expect_status 404 "bob cannot stream alice's app (404)"

echo
echo "test_drg_stream: all checks passed"
