#!/usr/bin/env bash
# Device certificates with openssl, mosquitto and curl: openssl makes keys and CSRs, Drover's
# device CA signs them, mosquitto_pub/mosquitto_sub and curl authenticate with them; revoking
# one closes the live mosquitto_sub session within a second and refuses the next handshake; the
# CRL (read by openssl) lists it; a certificate of the application's own CA is revoked by file
# and by serial; a weak RSA key, a forged CSR and another tenant are refused.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v openssl >/dev/null || fail "openssl is not installed"
command -v mosquitto_sub >/dev/null || fail "the mosquitto clients are not installed"

start_drover
cd "$WORK_DIR"
CA_FILE="$DROVER_DATA/tls/ca.pem"
API=/api/certificates/v1alpha1
export DROVER_CONFIG_DIR="$WORK_DIR/cli"
run_ok "drover login" "$DROVER_BIN" login "$DROVER_URL" --token "admin:$ADMIN_TOKEN"

step "registry: an application trusting its own CA too, and devices"
make_ca own-ca "Own Device CA"
anchor="$(base64 -w0 own-ca.pem)"
http_as admin "$ADMIN_TOKEN" POST /api/registry/v1alpha1/apps -H 'content-type: application/json' \
    -d "{\"metadata\":{\"name\":\"fleet\"},\"spec\":{\"trustAnchors\":{\"anchors\":[{\"certificate\":\"$anchor\"}]}}}"
expect_status 201 "app fleet"
for d in dev-ec dev-rsa own-1 own-2; do
    run_ok "device $d" "$DROVER_BIN" device create "$d" --app fleet
done

step "openssl CSRs signed by the device CA (EC P-256 and RSA 2048)"
run_ok "EC key and CSR" openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout dev-ec-key.pem -out dev-ec.csr -subj "/CN=anything"
run_ok "RSA key and CSR" openssl req -newkey rsa:2048 -nodes -keyout dev-rsa-key.pem -out dev-rsa.csr \
    -subj "/CN=anything"
for d in dev-ec dev-rsa; do
    http_as admin "$ADMIN_TOKEN" POST "$API/apps/fleet/devices/$d" -H 'content-type: application/pkcs10' \
        --data-binary "@$d.csr"
    expect_status 201 "certificate for $d"
    printf '%s' "$HTTP_BODY" | json_get 'd["certificate"]' >"$d.pem"
    printf '%s' "$HTTP_BODY" | json_get 'd["fingerprint"]' >"$d.fp"
done
run_ok "the device CA" curl -sf "$DROVER_URL$API/ca" -o device-ca.pem
run_ok "openssl verifies the certificate against the device CA" \
    openssl verify -CAfile device-ca.pem -purpose sslclient dev-ec.pem
assert_contains "$(openssl x509 -in dev-rsa.pem -noout -subject)" "CN = dev-rsa" "the subject names the device"

step "mosquitto and curl authenticate with them"
run_ok "mosquitto_pub with the EC certificate" mosquitto_pub -h localhost -p "$DROVER_MQTTS_PORT" \
    --cafile "$CA_FILE" --cert dev-ec.pem --key dev-ec-key.pem -q 1 -t telemetry -m '{"t":1}'
http POST "$DROVER_HTTPS_URL/v1/telemetry" --cacert "$CA_FILE" --cert dev-rsa.pem --key dev-rsa-key.pem -d '{"t":2}'
expect_status 202 "curl with the RSA certificate"

step "revocation closes the live session within a second"
mosquitto_sub -h localhost -p "$DROVER_MQTTS_PORT" --cafile "$CA_FILE" --cert dev-ec.pem --key dev-ec-key.pem \
    -q 1 -t 'command/inbox//#' >sub.out 2>&1 &
SUB=$!
# Subscribed once a command reaches it.
deadline=$((SECONDS + 20))
until grep -q ping sub.out; do
    http_as admin "$ADMIN_TOKEN" POST "/api/command/v1alpha1/apps/fleet/devices/dev-ec?command=ping" -d ping
    ((SECONDS < deadline)) || fail "mosquitto_sub never got a command"
    sleep 0.3
done
ok "mosquitto_sub is connected and subscribed"
run_ok "drover cert revoke" "$DROVER_BIN" cert revoke "$(cat dev-ec.fp)" --app fleet
deadline=$((SECONDS + 10))
while kill -0 "$SUB" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "mosquitto_sub still runs 10 s after the revocation"
    sleep 0.05
done
ok "mosquitto_sub ended (disconnected, then refused when it came back)"
# From the revocation's commit to the session's close, by the server's own clock.
elapsed_ms="$(python3 - "$DROVER_LOG" <<'PY'
import re, sys
from datetime import datetime
revoked = closed = None
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    t = line.split(" ", 1)[0]
    if "revoked a device certificate" in line and revoked is None:
        revoked = datetime.fromisoformat(t.replace("Z", "+00:00"))
    elif closed is None and "closed by the server (0x87" in line:
        closed = datetime.fromisoformat(t.replace("Z", "+00:00"))
# The close may be logged before the API logs its answer: 0 then.
print(max(0, int((closed - revoked).total_seconds() * 1000)) if revoked and closed else -1)
PY
)"
((elapsed_ms >= 0)) || fail "the server log does not show the revocation and the session's close"
ok "the server closed the session ${elapsed_ms} ms after it recorded the revocation"
((elapsed_ms < 1000)) || fail "the session ended after ${elapsed_ms} ms, not within a second"
run_fail "a new handshake with the revoked certificate" mosquitto_pub -h localhost -p "$DROVER_MQTTS_PORT" \
    --cafile "$CA_FILE" --cert dev-ec.pem --key dev-ec-key.pem -q 1 -t telemetry -m x
grep -q "certificate $(cat dev-ec.fp) of device 'dev-ec' (application 'fleet') was revoked" "$DROVER_LOG" ||
    fail "the server log does not name the revoked certificate"
ok "the server log names the revoked certificate"
run_ok "the CRL" curl -sf "$DROVER_URL$API/crl" -o crl.der
run_ok "openssl reads the CRL, signed by the device CA" openssl crl -inform der -in crl.der -CAfile device-ca.pem -noout
serial="$(openssl x509 -in dev-ec.pem -noout -serial | cut -d= -f2)"
assert_contains "$(openssl crl -inform der -in crl.der -noout -text)" "$serial" "the CRL lists the revoked serial"
run_fail "openssl verify with the CRL" openssl verify -crl_check -CAfile device-ca.pem -CRLfile \
    <(openssl crl -inform der -in crl.der) dev-ec.pem

step "certificates of the application's own CA: revoked by file and by serial"
make_client_cert own-1 "/CN=own-1" own-ca
make_client_cert own-2 "/CN=own-2" own-ca
for d in own-1 own-2; do
    run_ok "mosquitto_pub as $d" mosquitto_pub -h localhost -p "$DROVER_MQTTS_PORT" --cafile "$CA_FILE" \
        --cert "$d.pem" --key "$d-key.pem" -q 1 -t telemetry -m x
done
run_ok "revoke own-1 by its file" "$DROVER_BIN" cert revoke --app fleet --file own-1.pem
own2_serial="$(openssl x509 -in own-2.pem -noout -serial | cut -d= -f2)"
run_ok "revoke own-2 by its serial" "$DROVER_BIN" cert revoke --app fleet --serial "$own2_serial" --device own-2
for d in own-1 own-2; do
    run_fail "mosquitto_pub as $d after the revocation" mosquitto_pub -h localhost -p "$DROVER_MQTTS_PORT" \
        --cafile "$CA_FILE" --cert "$d.pem" --key "$d-key.pem" -q 1 -t telemetry -m x
done

step "bad input"
run_ok "an RSA 1024 CSR" openssl req -newkey rsa:1024 -nodes -keyout weak-key.pem -out weak.csr -subj "/CN=x"
http_as admin "$ADMIN_TOKEN" POST "$API/apps/fleet/devices/dev-rsa" -H 'content-type: application/pkcs10' \
    --data-binary @weak.csr
expect_status 400 "a 1024-bit RSA key"
assert_contains "$HTTP_BODY" "1024 bits: at least 2048" "the refusal says why"
# The same CSR with its subject changed after it was signed.
openssl req -in dev-ec.csr -outform der | python3 -c '
import base64, sys
der = sys.stdin.buffer.read().replace(b"anything", b"anythinG")
print("-----BEGIN CERTIFICATE REQUEST-----")
print(base64.encodebytes(der).decode(), end="")
print("-----END CERTIFICATE REQUEST-----")' >forged.csr
http_as admin "$ADMIN_TOKEN" POST "$API/apps/fleet/devices/dev-ec" -H 'content-type: application/pkcs10' \
    --data-binary @forged.csr
expect_status 400 "a CSR altered after it was signed"
assert_contains "$HTTP_BODY" "does not verify" "the refusal says why"
MALLORY_TOKEN="$(create_user mallory)"
http_as mallory "$MALLORY_TOKEN" POST "$API/apps/fleet/devices/dev-ec" -H 'content-type: application/pkcs10' \
    --data-binary @dev-ec.csr
expect_status 404 "another tenant issuing"
http_as mallory "$MALLORY_TOKEN" POST "$API/apps/fleet/$(cat dev-rsa.fp)/revoke"
expect_status 404 "another tenant revoking"

echo
echo "test_certificates: all checks passed"
