#!/usr/bin/env bash
# Microsoft's Azure IoT device SDK for Python (azure-iot-device 2.14, unmodified) against Drover
# started with --hub-domain, so the device is given only its hub host name (<app>.<hub domain>):
# over MQTTS and over MQTT-over-WebSocket (port 443 -> the HTTPS device listener), with a SAS key
# (telemetry with properties checked in the stream, twin read and reported patch, a desired patch,
# a cloud-to-device message sent with `drover cmd`, a direct method through the API) and with an
# X.509 certificate; a second connection with the same identity drops the first; a wrong key is
# refused. See tests/interop/azure_device.py.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AZ="$REPO_ROOT/tests/interop/.venv-azure/bin/python"
PY="$REPO_ROOT/tests/interop/.venv/bin/python"
[[ -x "$AZ" ]] || fail "the Azure SDK venv is missing: .ci/run's tools step creates it"
[[ -x "$PY" ]] || fail "the interop venv is missing: .ci/run's tools step creates it"
command -v openssl >/dev/null || fail "openssl is not installed"

DOMAIN=iot.drover.test
start_drover --hub-domain "$DOMAIN"
cd "$WORK_DIR"
APP=az-sdk
HUB="$APP.$DOMAIN"
KEY1="$(head -c 32 /dev/urandom | base64 -w0)"
KEY2="$(head -c 32 /dev/urandom | base64 -w0)"

step "registry: an application (the hub) trusting a device CA, devices with SAS keys and one by certificate"
make_ca device-ca "Azure Device CA"
make_client_cert dev-x509 "/CN=dev-x509" device-ca
anchor="$(base64 -w0 device-ca.pem)"
http_as admin "$ADMIN_TOKEN" POST /api/registry/v1alpha1/apps -H 'content-type: application/json' \
    -d "{\"metadata\":{\"name\":\"$APP\"},\"spec\":{\"trustAnchors\":{\"anchors\":[{\"certificate\":\"$anchor\"}]}}}"
expect_status 201 "app $APP"
for body in "{\"metadata\":{\"name\":\"dev1\"},\"spec\":{\"authentication\":{\"credentials\":[{\"sas\":{\"primaryKey\":\"$KEY1\"}}]}}}" \
    "{\"metadata\":{\"name\":\"dev2\"},\"spec\":{\"authentication\":{\"credentials\":[{\"sas\":{\"primaryKey\":\"$KEY2\"}}]}}}" \
    '{"metadata":{"name":"dev-x509"}}'; do
    http_as admin "$ADMIN_TOKEN" POST "/api/registry/v1alpha1/apps/$APP/devices" \
        -H 'content-type: application/json' -d "$body"
    expect_status 201 "device $(printf '%s' "$body" | json_get 'd["metadata"]["name"]')"
done

step "the drover CLI, logged in (it sends the cloud-to-device messages)"
export DROVER_CONFIG_DIR="$WORK_DIR/cli"
run_ok "drover login" "$DROVER_BIN" login "$DROVER_URL" --token "admin:$ADMIN_TOKEN"

common=(--hub "$HUB" --ca "$DROVER_DATA/tls/ca.pem" --mqtts-port "$DROVER_MQTTS_PORT"
    --https-port "${DROVER_HTTPS_URL##*:}" --api "$DROVER_URL" --app "$APP" --user admin
    --token "$ADMIN_TOKEN" --drover "$DROVER_BIN")
device() { "$AZ" "$REPO_ROOT/tests/interop/azure_device.py" "$@" "${common[@]}"; }

step "azure-iot-device over MQTTS with a SAS key"
run_ok "the SDK device" device full --transport mqtt --device dev1 --key "$KEY1"
assert_contains "$LAST_OUTPUT" "ALL OK" "every step of the SDK device"

step "azure-iot-device over MQTT over WebSocket (websockets=True, port 443) with a SAS key"
run_ok "the SDK device" device full --transport websockets --device dev2 --key "$KEY2"
assert_contains "$LAST_OUTPUT" "ALL OK" "every step of the SDK device over WebSocket"

step "azure-iot-device with an X.509 certificate, over MQTTS and over WebSocket"
for transport in mqtt websockets; do
    run_ok "the SDK device ($transport)" device x509 --transport "$transport" --device dev-x509 \
        --cert dev-x509.pem --cert-key dev-x509-key.pem
    assert_contains "$LAST_OUTPUT" "ALL OK" "the X.509 device over $transport"
done

step "a second connection with the same identity drops the first"
run_ok "two SDK clients as dev1" device takeover --transport mqtt --device dev1 --key "$KEY1"
assert_contains "$LAST_OUTPUT" "ALL OK" "the takeover"

step "the telemetry in the stream"
ws_url="ws://127.0.0.1:${DROVER_URL##*:}/api/integrations/v1alpha1/ws/$APP"
run_ok "read the stream" "$PY" "$REPO_ROOT/tests/interop/stream.py" "$ws_url" admin "$ADMIN_TOKEN" 0
events="$(printf '%s\n' "$LAST_OUTPUT" | grep io.drogue.event.v1 | grep '"subject": "telemetry"')"
for who in '"device": "dev1"' '"device": "dev2"' '"device": "dev-x509"'; do
    assert_contains "$events" "$who" "telemetry of $who"
done
assert_contains "$events" '"transport": "websockets"' "telemetry that came over WebSocket"
event="$(printf '%s\n' "$events" | head -n1)"
assert_contains "$event" '"room": "kitchen"' "the custom property is an extension"
assert_contains "$event" '"messageid": "m-1"' "the message id is an extension"
assert_contains "$event" '"temp": 21.5' "the JSON payload"

step "a wrong key is refused"
WRONG="$(head -c 32 /dev/urandom | base64 -w0)"
run_fail "the SDK device with another key" device x509 --transport mqtt --device dev1 --key "$WRONG"
grep -q "shared access signature refused for device 'dev1'" "$DROVER_LOG" ||
    fail "the server log does not name the refusal"
ok "the server log names the refusal"

echo
echo "test_azure_sdk: all checks passed"
