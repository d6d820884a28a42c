#!/usr/bin/env bash
# Microsoft's Azure IoT device SDK for Python (azure-iot-device 2.14, unmodified) against
# Drover's MQTTS listener: SAS key, telemetry with properties (checked in the stream), twin read
# and reported patch, a desired patch, a cloud-to-device message and a direct method triggered
# through the API; a wrong key is refused. See tests/interop/azure_device.py.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AZ="$REPO_ROOT/tests/interop/.venv-azure/bin/python"
PY="$REPO_ROOT/tests/interop/.venv/bin/python"
[[ -x "$AZ" ]] || fail "the Azure SDK venv is missing: .ci/run's tools step creates it"
[[ -x "$PY" ]] || fail "the interop venv is missing: .ci/run's tools step creates it"

start_drover
cd "$WORK_DIR"
APP=az-sdk
HUB="$APP.iot.drover.test"
KEY="$(head -c 32 /dev/urandom | base64 -w0)"

step "registry: an application (the hub) and a device with a SAS key"
http_as admin "$ADMIN_TOKEN" POST /api/registry/v1alpha1/apps -H 'content-type: application/json' \
    -d "{\"metadata\":{\"name\":\"$APP\"}}"
expect_status 201 "app $APP"
http_as admin "$ADMIN_TOKEN" POST "/api/registry/v1alpha1/apps/$APP/devices" -H 'content-type: application/json' \
    -d "{\"metadata\":{\"name\":\"dev1\"},\"spec\":{\"authentication\":{\"credentials\":[{\"sas\":{\"primaryKey\":\"$KEY\"}}]}}}"
expect_status 201 "device dev1"

step "azure-iot-device"
run_ok "the SDK device" "$AZ" "$REPO_ROOT/tests/interop/azure_device.py" "$DROVER_MQTTS_PORT" \
    "$DROVER_DATA/tls/ca.pem" "$HUB" dev1 "$KEY" "$DROVER_URL" "$APP" admin "$ADMIN_TOKEN"
assert_contains "$LAST_OUTPUT" "ALL OK" "every step of the SDK device"

step "the telemetry in the stream"
ws_url="ws://127.0.0.1:${DROVER_URL##*:}/api/integrations/v1alpha1/ws/$APP"
run_ok "read the stream" "$PY" "$REPO_ROOT/tests/interop/stream.py" "$ws_url" admin "$ADMIN_TOKEN" 3 20
event="$(printf '%s\n' "$LAST_OUTPUT" | grep io.drogue.event.v1 | head -n1)"
assert_contains "$event" '"room": "kitchen"' "the custom property is an extension"
assert_contains "$event" '"messageid": "m-1"' "the message id is an extension"
assert_contains "$event" '"temp": 21.5' "the JSON payload"

step "a wrong key is refused"
WRONG="$(head -c 32 /dev/urandom | base64 -w0)"
run_fail "the SDK device with another key" "$AZ" "$REPO_ROOT/tests/interop/azure_device.py" "$DROVER_MQTTS_PORT" \
    "$DROVER_DATA/tls/ca.pem" "$HUB" dev1 "$WRONG" "$DROVER_URL" "$APP" admin "$ADMIN_TOKEN"
grep -q "shared access signature refused for device 'dev1'" "$DROVER_LOG" ||
    fail "the server log does not name the refusal"
ok "the server log names the refusal"

echo
echo "test_azure_sdk: all checks passed"
