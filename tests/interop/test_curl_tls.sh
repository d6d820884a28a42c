#!/usr/bin/env bash
# HTTPS with the development CA and X.509 client certificates made with openssl, exactly as
# docs/devices.md shows them; curl is the device.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v openssl >/dev/null || fail "openssl is not installed"
start_drover
CA_FILE="$DROVER_DATA/tls/ca.pem"
[[ -s "$CA_FILE" ]] || fail "no development CA at $CA_FILE"
ok "the development CA exists"
cd "$WORK_DIR"

step "a device CA and a device certificate (openssl)"
run_ok "device CA" openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout device-ca-key.pem -out device-ca.pem -days 365 -subj "/CN=My Device CA"
run_ok "device key and CSR" openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout sensor-1-key.pem -out sensor-1.csr -subj "/CN=sensor-1/O=my-app"
printf 'extendedKeyUsage=clientAuth\n' >client.ext
run_ok "device certificate" openssl x509 -req -in sensor-1.csr -CA device-ca.pem -CAkey device-ca-key.pem \
    -CAcreateserial -out sensor-1.pem -days 365 -extfile client.ext

step "registry"
anchor="$(base64 -w0 device-ca.pem)"
http_as admin "$ADMIN_TOKEN" POST /api/registry/v1alpha1/apps -H 'content-type: application/json' \
    -d "{\"metadata\":{\"name\":\"my-app\"},\"spec\":{\"trustAnchors\":{\"anchors\":[{\"certificate\":\"$anchor\"}]}}}"
expect_status 201 "app with the device CA as trust anchor"
http_as admin "$ADMIN_TOKEN" GET /api/registry/v1alpha1/apps/my-app
assert_contains "$HTTP_BODY" '"subject":"CN=My Device CA"' "status.trustAnchors shows the valid anchor"
http_as admin "$ADMIN_TOKEN" POST /api/registry/v1alpha1/apps/my-app/devices -H 'content-type: application/json' \
    -d '{"metadata":{"name":"sensor-1"},"spec":{"authentication":{"credentials":[{"pass":"s3cret"}]}}}'
expect_status 201 "device sensor-1"

step "curl over HTTPS"
http POST "$DROVER_HTTPS_URL/v1/telemetry" --cacert "$CA_FILE" -u 'sensor-1@my-app:s3cret' -d '{"temp":1}'
expect_status 202 "password over HTTPS, server verified with the development CA"
http POST "$DROVER_HTTPS_URL/v1/telemetry" --cacert "$CA_FILE" --cert sensor-1.pem --key sensor-1-key.pem \
    -d '{"temp":2}'
expect_status 202 "X.509 client certificate"
run_ok "a stranger CA" openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout other-ca-key.pem -out other-ca.pem -days 365 -subj "/CN=My Device CA"
run_ok "a certificate from it" openssl x509 -req -in sensor-1.csr -CA other-ca.pem -CAkey other-ca-key.pem \
    -CAcreateserial -out forged.pem -days 365 -extfile client.ext
http POST "$DROVER_HTTPS_URL/v1/telemetry" --cacert "$CA_FILE" --cert forged.pem --key sensor-1-key.pem -d '{}'
expect_status 403 "a certificate from an untrusted CA with the same name is refused"
capture curl -sS -o /dev/null "$DROVER_HTTPS_URL/v1/telemetry" -d '{}'
[[ "$LAST_RC" -ne 0 ]] || fail "curl without --cacert must not trust the development CA"
ok "without --cacert, curl refuses the server certificate"

echo
echo "test_curl_tls: all checks passed"
