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

step "provisioning (DPS): enrollments through the API"
SCOPE="$(curl -sf -u "admin:$ADMIN_TOKEN" "$DROVER_URL/api/provisioning/v1alpha1/info" | json_get 'd["idScope"]')"
GROUP_KEY="$(head -c 32 /dev/urandom | base64 -w0)"
IND_KEY="$(head -c 32 /dev/urandom | base64 -w0)"
http_as admin "$ADMIN_TOKEN" PUT "/api/provisioning/v1alpha1/apps/$APP/groups/factory" -H 'content-type: application/json' \
    -d "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$GROUP_KEY\"}},\"labels\":{\"source\":\"dps\"}}"
expect_status 201 "enrollment group factory"
http_as admin "$ADMIN_TOKEN" PUT "/api/provisioning/v1alpha1/apps/$APP/enrollments/solo-1" -H 'content-type: application/json' \
    -d "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$IND_KEY\"}},\"initialTwin\":{\"desired\":{\"interval\":5}}}"
expect_status 201 "individual enrollment solo-1"
http_as admin "$ADMIN_TOKEN" PUT "/api/provisioning/v1alpha1/apps/$APP/enrollments/off-1" -H 'content-type: application/json' \
    -d "{\"provisioningStatus\":\"disabled\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$IND_KEY\"}}}"
expect_status 201 "disabled enrollment off-1"

step "azure-iot-device's ProvisioningDeviceClient registers, then connects to its hub"
run_ok "a group device over MQTT" device provision --transport mqtt --device line-4-unit-17 --group-key "$GROUP_KEY" --id-scope "$SCOPE"
assert_contains "$LAST_OUTPUT" "ALL OK" "group enrollment over MQTT"
run_ok "an individual enrollment over MQTT over WebSocket" device provision --transport websockets --device solo-1 --key "$IND_KEY" --id-scope "$SCOPE"
assert_contains "$LAST_OUTPUT" "ALL OK" "individual enrollment over WebSocket"
run_ok "a disabled enrollment" device provision --transport mqtt --device off-1 --key "$IND_KEY" --id-scope "$SCOPE" --expect-refusal
assert_contains "$LAST_OUTPUT" "registration refused" "the disabled enrollment is refused"
http_as admin "$ADMIN_TOKEN" GET "/api/registry/v1alpha1/apps/$APP/devices/line-4-unit-17"
expect_status 200 "the provisioned device"
assert_contains "$HTTP_BODY" '"source":"dps"' "it has the group's labels"
http_as admin "$ADMIN_TOKEN" GET "/api/registry/v1alpha1/apps/$APP/devices/solo-1/twin"
assert_contains "$HTTP_BODY" '"interval":5' "the individual enrollment's initial twin"

step "provisioning over REST with curl"
DPS_TOKEN="$("$PY" -c '
import base64, hashlib, hmac, sys, time, urllib.parse
scope, rid, key = sys.argv[1:4]
sr = urllib.parse.quote(f"{scope}/registrations/{rid}", safe="")
se = int(time.time()) + 600
sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
sig = urllib.parse.quote(sig, safe="")
print(f"SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn=registration")
' "$SCOPE" solo-1 "$IND_KEY")"
http PUT "$DROVER_HTTPS_URL/$SCOPE/registrations/solo-1/register?api-version=2019-03-31" --cacert "$DROVER_DATA/tls/ca.pem" \
    -H "authorization: $DPS_TOKEN" -H 'content-type: application/json' -d '{"registrationId":"solo-1"}'
expect_status 202 "PUT .../register"
op="$(printf '%s' "$HTTP_BODY" | json_get 'd["operationId"]')"
http GET "$DROVER_HTTPS_URL/$SCOPE/registrations/solo-1/operations/$op?api-version=2019-03-31" --cacert "$DROVER_DATA/tls/ca.pem" \
    -H "authorization: $DPS_TOKEN"
expect_status 200 "GET .../operations/{id}"
assert_contains "$HTTP_BODY" '"deviceId":"solo-1"' "assigned"

step "the telemetry in the stream"
ws_url="ws://127.0.0.1:${DROVER_URL##*:}/api/integrations/v1alpha1/ws/$APP"
run_ok "read the stream" "$PY" "$REPO_ROOT/tests/interop/stream.py" "$ws_url" admin "$ADMIN_TOKEN" 0
events="$(printf '%s\n' "$LAST_OUTPUT" | grep io.drogue.event.v1 | grep '"subject": "telemetry"')"
for who in '"device": "dev1"' '"device": "dev2"' '"device": "dev-x509"' '"device": "line-4-unit-17"' '"device": "solo-1"'; do
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
