#!/usr/bin/env bash
# Commands with clients nobody here wrote: `drg cmd` reaches a device subscribed with
# mosquitto_sub on command/inbox//#; curl long-polls with `ct`; an unreachable device is an error.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v mosquitto_sub >/dev/null || fail "mosquitto_sub is not installed (apt install mosquitto-clients)"
start_drover
drg_login admin "$ADMIN_TOKEN"
run_ok "create app" drg create app cmd-app
run_ok "create device" drg create device dev1 --app cmd-app
run_ok "set password" drg set password dev1 's3cret' --app cmd-app

step "drg cmd -> mosquitto_sub on command/inbox//#"
out="$WORK_DIR/inbox.out"
mosquitto_sub -V mqttv311 -h 127.0.0.1 -p "$DROVER_MQTT_PORT" -i dev1 -u dev1@cmd-app -P s3cret \
    -t 'command/inbox//#' -q 1 -C 1 -W 30 -v >"$out" 2>&1 &
sub=$!
# The subscription is live once drg's command is accepted (202); until then it is refused (503).
deadline=$((SECONDS + 20))
until drg cmd dev1 set-led --app cmd-app -p '{"on":true}' >"$WORK_DIR/cmd.out" 2>&1; do
    ((SECONDS < deadline)) || fail "drg cmd never got through: $(cat "$WORK_DIR/cmd.out")"
    sleep 0.2
done
ok "drg cmd was accepted"
wait "$sub" || fail "mosquitto_sub got no command: $(cat "$out")"
LAST_OUTPUT="$(cat "$out")"
assert_contains "$LAST_OUTPUT" 'command/inbox//set-led {"on":true}' "the device got the command on its inbox"

step "curl long poll with ct"
(sleep 1; curl -sf -o /dev/null -u "admin:$ADMIN_TOKEN" -H 'content-type: application/json' -d '{"x":1}' \
    "$DROVER_URL/api/command/v1alpha1/apps/cmd-app/devices/dev1?command=blink") &
http POST "$DROVER_HTTP_URL/v1/telemetry?ct=15" -u 'dev1@cmd-app:s3cret' -D "$WORK_DIR/headers" -d '{}'
expect_status 200 "the waiting request returns the command"
assert_contains "$(cat "$WORK_DIR/headers")" "command: blink" "with the command header"
assert_contains "$HTTP_BODY" '{"x":1}' "and the payload as body"

step "unreachable devices"
run_fail "drg cmd to a device nobody can reach fails" drg cmd dev1 ping --app cmd-app -p '{}'
assert_contains "$LAST_OUTPUT" "not connected" "… saying so"

echo
echo "test_commands: all checks passed"
