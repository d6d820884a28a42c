#!/usr/bin/env bash
# MQTT devices with clients nobody here wrote: mosquitto_pub (3.1.1 and 5, plain, TLS with the
# development CA, X.509 client certificates, gateway) and Python paho-mqtt (3.1.1 and 5); the
# events are read back from the WebSocket integration in order.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v mosquitto_pub >/dev/null || fail "mosquitto_pub is not installed (apt install mosquitto-clients)"
PY="$REPO_ROOT/tests/interop/.venv/bin/python"
[[ -x "$PY" ]] || fail "the interop venv is missing: .ci/run's tools step creates it"

start_drover
CA_FILE="$DROVER_DATA/tls/ca.pem"
cd "$WORK_DIR"

step "registry: an app trusting a device CA, a device, a gateway"
make_ca device-ca "MQTT Device CA"
make_client_cert cert-dev "/CN=cert-dev/O=mqtt-app" device-ca
anchor="$(base64 -w0 device-ca.pem)"
http_as admin "$ADMIN_TOKEN" POST /api/registry/v1alpha1/apps -H 'content-type: application/json' \
    -d "{\"metadata\":{\"name\":\"mqtt-app\"},\"spec\":{\"trustAnchors\":{\"anchors\":[{\"certificate\":\"$anchor\"}]}}}"
expect_status 201 "app mqtt-app"
for body in '{"metadata":{"name":"dev"},"spec":{"authentication":{"credentials":[{"pass":"pw"}]}}}' \
    '{"metadata":{"name":"gw"},"spec":{"authentication":{"credentials":[{"pass":"gwpw"}]}}}' \
    '{"metadata":{"name":"behind"},"spec":{"gatewaySelector":{"matchNames":["gw"]}}}' \
    '{"metadata":{"name":"cert-dev"}}'; do
    http_as admin "$ADMIN_TOKEN" POST /api/registry/v1alpha1/apps/mqtt-app/devices \
        -H 'content-type: application/json' -d "$body"
    expect_status 201 "device $(printf '%s' "$body" | json_get 'd["metadata"]["name"]')"
done

M=(-h 127.0.0.1 -p "$DROVER_MQTT_PORT" -q 1)
MS=(-h localhost -p "$DROVER_MQTTS_PORT" -q 1 --cafile "$CA_FILE")

step "mosquitto_pub"
run_ok "3.1.1, password" mosquitto_pub -V mqttv311 "${M[@]}" -i m1 -u dev@mqtt-app -P pw -t telemetry -m '{"n":1}'
run_ok "5, content type and user property" mosquitto_pub -V mqttv5 "${M[@]}" -i m2 -u dev@mqtt-app -P pw \
    -t telemetry -m 'n=2' -D publish content-type text/plain -D publish user-property room kitchen
run_ok "3.1.1 over TLS (development CA)" mosquitto_pub -V mqttv311 "${MS[@]}" -i m3 -u dev@mqtt-app -P pw \
    -t telemetry -m '{"n":3}'
run_ok "5 over TLS with an X.509 client certificate" mosquitto_pub -V mqttv5 "${MS[@]}" -i m4 \
    --cert cert-dev.pem --key cert-dev-key.pem -t telemetry -m '{"n":4}'
run_ok "gateway for behind" mosquitto_pub -V mqttv311 "${M[@]}" -i m5 -u gw@mqtt-app -P gwpw \
    -t telemetry/behind -m '{"n":5}'
run_fail "a wrong password is refused" mosquitto_pub -V mqttv311 "${M[@]}" -i m6 -u dev@mqtt-app -P nope \
    -t telemetry -m x
assert_contains "$LAST_OUTPUT" "bad user name or password" "mosquitto_pub reports the refusal"
run_fail "TLS without trusting the CA fails" mosquitto_pub -V mqttv311 -h localhost -p "$DROVER_MQTTS_PORT" \
    --capath /etc/ssl/certs -i m7 -u dev@mqtt-app -P pw -t telemetry -m x

step "mosquitto_sub: devices subscribe to their command inbox only"
capture mosquitto_sub -V mqttv5 -h 127.0.0.1 -p "$DROVER_MQTT_PORT" -i s1 -u dev@mqtt-app -P pw \
    -t 'command/inbox//#' -q 1 -W 2
# -W: mosquitto_sub gives up after 2 s without messages (exit 27) once subscribed.
[[ "$LAST_RC" -eq 27 ]] || fail "expected mosquitto_sub to subscribe and time out (27), got $LAST_RC: $LAST_OUTPUT"
ok "command/inbox//# is granted (no commands yet: the subscription times out)"
capture mosquitto_sub -V mqttv5 -h 127.0.0.1 -p "$DROVER_MQTT_PORT" -i s2 -u dev@mqtt-app -P pw \
    -t 'app/mqtt-app' -q 1 -W 2
[[ "$LAST_RC" -ne 27 ]] || fail "a device subscribing to app/... must be refused, but it was granted"
assert_contains "$LAST_OUTPUT" "denied" "other filters are refused (SUBACK failure)"

step "paho-mqtt"
run_ok "paho 3.1.1" "$PY" "$REPO_ROOT/tests/interop/paho_publish.py" 311 127.0.0.1 "$DROVER_MQTT_PORT" \
    dev@mqtt-app pw telemetry '{"n":6}'
run_ok "paho 5" "$PY" "$REPO_ROOT/tests/interop/paho_publish.py" 5 127.0.0.1 "$DROVER_MQTT_PORT" \
    dev@mqtt-app pw telemetry '{"n":7}' application/json
run_fail "paho 5, JSON content type with a payload that is not JSON" \
    "$PY" "$REPO_ROOT/tests/interop/paho_publish.py" 5 127.0.0.1 "$DROVER_MQTT_PORT" \
    dev@mqtt-app pw telemetry '{nope' application/json
assert_contains "$LAST_OUTPUT" "Payload format invalid" "paho sees PUBACK 0x99"

step "the stream holds every message, in order"
ws_url="ws://127.0.0.1:${DROVER_URL##*:}/api/integrations/v1alpha1/ws/mqtt-app"
run_ok "read the stream" "$PY" "$REPO_ROOT/tests/interop/stream.py" "$ws_url" admin "$ADMIN_TOKEN" 27 20
telemetry="$(printf '%s\n' "$LAST_OUTPUT" | "$PY" -c '
import base64, json, sys
for line in sys.stdin:
    e = json.loads(line)
    if e["type"] != "io.drogue.event.v1":
        continue
    data = e.get("data")
    if data is None and "data_base64" in e:
        data = base64.b64decode(e["data_base64"]).decode()
    n = data["n"] if isinstance(data, dict) else data
    print(e["device"], e["sender"], e.get("datacontenttype"), e.get("room", "-"), n)
' 2>&1 || true)"
printf '%s\n' "$telemetry"
expected="dev dev application/json - 1
dev dev text/plain kitchen n=2
dev dev application/json - 3
cert-dev cert-dev application/json - 4
behind gw application/json - 5
dev dev application/json - 6
dev dev application/json - 7"
[[ "$telemetry" == "$expected" ]] || fail "telemetry in the stream differs; expected:
$expected"
ok "seven telemetry events, in order, with devices, senders, content types and properties"
connections="$(printf '%s\n' "$LAST_OUTPUT" | grep -c 'io.drogue.connection.v1' || true)"
# 10 clients got in (5 mosquitto_pub, 2 mosquitto_sub, 3 paho): a connect and a disconnect event each.
[[ "$connections" -eq 20 ]] || fail "expected 20 connection events, got $connections"
ok "connection events for every client ($connections)"

echo
echo "test_mqtt_clients: all checks passed"
