#!/usr/bin/env bash
# The MQTT integration with clients nobody here wrote: mosquitto_sub (3.1.1 and 5) and paho-mqtt
# (structured and binary mode, a shared group of two members) consume what devices publish.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v mosquitto_sub >/dev/null || fail "mosquitto_sub is not installed (apt install mosquitto-clients)"
PY="$REPO_ROOT/tests/interop/.venv/bin/python"
[[ -x "$PY" ]] || fail "the interop venv is missing: .ci/run's tools step creates it"
SUB="$REPO_ROOT/tests/interop/paho_subscribe.py"

start_drover
ALICE="$(create_user alice)"
cd "$WORK_DIR"
http_as alice "$ALICE" POST /api/registry/v1alpha1/apps -H 'content-type: application/json' \
    -d '{"metadata":{"name":"int-app"}}'
expect_status 201 "alice creates int-app"
DEVICES=(d1 d2 d3 d4 d5 d6 d7 d8 d9 d10 d11 d12 d13 d14 d15 d16)
for d in "${DEVICES[@]}"; do
    http_as alice "$ALICE" POST /api/registry/v1alpha1/apps/int-app/devices -H 'content-type: application/json' \
        -d "{\"metadata\":{\"name\":\"$d\"},\"spec\":{\"authentication\":{\"credentials\":[{\"pass\":\"pw\"}]}}}"
    expect_status 201 "device $d"
done

# publish_until FILE DEVICE...: publish telemetry round-robin from the devices until FILE has
# a line `done` or 30 s passed (subscribers start live, so keep publishing until they saw enough).
publish_until() {
    local file="$1" n=0 deadline=$((SECONDS + 30))
    shift
    while ! grep -q '^done$' "$file" 2>/dev/null; do
        ((SECONDS < deadline)) || fail "subscribers did not finish in 30 s: $(cat "$file")"
        for d in "$@"; do
            n=$((n + 1))
            curl -sf -o /dev/null -u "$d@int-app:pw" -H 'content-type: application/json' \
                -d "{\"n\":$n}" "$DROVER_HTTP_URL/v1/telemetry" || fail "publish failed"
        done
        sleep 0.05
    done
}

# wait_subscribed FILE...: wait until each paho subscriber printed `subscribed`.
wait_subscribed() {
    local deadline=$((SECONDS + 20)) f
    for f in "$@"; do
        until grep -q '^subscribed$' "$f" 2>/dev/null; do
            ((SECONDS < deadline)) || fail "subscriber did not subscribe: $(cat "$f")"
            sleep 0.1
        done
    done
}

step "mosquitto_sub 3.1.1 and 5, structured mode"
for v in mqttv311 mqttv5; do
    out="$WORK_DIR/mosq-$v.out"
    : >"$out.ctl"
    (mosquitto_sub -V "$v" -h 127.0.0.1 -p "$DROVER_INTEGRATION_PORT" -i "mosq-$v" -u alice -P "$ALICE" \
        -t app/int-app -q 1 -C 3 -W 30 >"$out" 2>&1; echo done >>"$out.ctl") &
    waiter=$!
    publish_until "$out.ctl" d1
    wait "$waiter" || true
    [[ "$(wc -l <"$out")" -eq 3 ]] || fail "mosquitto_sub $v: expected 3 messages: $(cat "$out")"
    LAST_OUTPUT="$(head -n 1 "$out")"
    assert_contains "$LAST_OUTPUT" '"type":"io.drogue.event.v1"' "mosquitto_sub $v receives JSON CloudEvents"
    assert_contains "$LAST_OUTPUT" '"device":"d1"' "… naming the device"
done
out="$WORK_DIR/mosq-tls.out"
(mosquitto_sub -V mqttv311 -h localhost -p "$DROVER_INTEGRATION_TLS_PORT" --cafile "$DROVER_DATA/tls/ca.pem" \
    -i mosq-tls -u alice -P "$ALICE" -t app/int-app -q 1 -C 1 -W 30 >"$out" 2>&1; echo done >>"$out.ctl") &
waiter=$!
publish_until "$out.ctl" d3
wait "$waiter" || true
LAST_OUTPUT="$(cat "$out")"
assert_contains "$LAST_OUTPUT" '"device":"d3"' "mosquitto_sub over TLS (development CA) receives events"
capture mosquitto_sub -V mqttv5 -h 127.0.0.1 -p "$DROVER_INTEGRATION_PORT" \
    -i wild -u alice -P "$ALICE" -t 'app/#' -C 1 -W 3
[[ "$LAST_RC" -ne 27 ]] || fail "a wildcard subscription must be refused, but it was granted"
assert_contains "$LAST_OUTPUT" "denied" "a wildcard subscription is refused (SUBACK failure)"
run_fail "a wrong token is refused" mosquitto_sub -V mqttv311 -h 127.0.0.1 -p "$DROVER_INTEGRATION_PORT" \
    -i bad -u alice -P wrong -t app/int-app -C 1 -W 3
assert_contains "$LAST_OUTPUT" "bad user name or password" "mosquitto_sub reports the refusal"

step "paho 5, binary mode"
bin="$WORK_DIR/binary.out"
"$PY" "$SUB" 5 127.0.0.1 "$DROVER_INTEGRATION_PORT" alice "$ALICE" app/int-app 2 30 binary bin-1 >"$bin" 2>&1 &
sub=$!
wait_subscribed "$bin"
# (the subscriber is not a child of the subshell below, so poll it)
(while kill -0 "$sub" 2>/dev/null; do sleep 0.1; done; echo done >>"$bin.ctl") &
waiter=$!
publish_until "$bin.ctl" d2
wait "$waiter" || true
wait "$sub" || fail "the binary-mode subscriber failed: $(cat "$bin")"
LAST_OUTPUT="$(grep -v '^subscribed$' "$bin" | head -n 1)"
assert_contains "$LAST_OUTPUT" '"content_type": "application/json"' "binary mode: the event's content type"
assert_contains "$LAST_OUTPUT" '"payload": "{\"n\":' "binary mode: the payload is the data"
assert_contains "$LAST_OUTPUT" '"device": "d2"' "binary mode: attributes as user properties"

step "paho 3.1.1 shared group: two members split the devices"
m1="$WORK_DIR/member1.out"
m2="$WORK_DIR/member2.out"
"$PY" "$SUB" 311 127.0.0.1 "$DROVER_INTEGRATION_PORT" alice "$ALICE" '$share/workers/app/int-app' 1000 60 "" m-1 >"$m1" 2>&1 &
p1=$!
"$PY" "$SUB" 311 127.0.0.1 "$DROVER_INTEGRATION_PORT" alice "$ALICE" '$share/workers/app/int-app' 1000 60 "" m-2 >"$m2" 2>&1 &
p2=$!
wait_subscribed "$m1" "$m2"
# Exactly 160 events (10 per device) while the membership is stable. (Devices are spread by
# hashing: with 16 devices, both members get some unless 1 in 32768.)
for n in $(seq 1 10); do
    for d in "${DEVICES[@]}"; do
        curl -sf -o /dev/null -u "$d@int-app:pw" -H 'content-type: application/json' \
            -d "{\"n\":$n}" "$DROVER_HTTP_URL/v1/telemetry" || fail "publish failed"
    done
done
deadline=$((SECONDS + 20))
until [[ "$(cat "$m1" "$m2" | grep -c '^{')" -ge 160 ]]; do
    ((SECONDS < deadline)) || fail "the group received $(cat "$m1" "$m2" | grep -c '^{') of 160 events"
    sleep 0.1
done
kill "$p1" "$p2" 2>/dev/null || true
wait "$p1" "$p2" 2>/dev/null || true
[[ "$(cat "$m1" "$m2" | grep -c '^{')" -eq 160 ]] || fail "the group received more than 160 events (duplicates)"
ok "the group received each of the 160 events once"
"$PY" - "$m1" "$m2" <<'PYEOF' || fail "shared group delivery is wrong"
import json, sys
members = []
for path in sys.argv[1:]:
    events = [json.loads(json.loads(l)["payload"]) for l in open(path) if l.startswith("{")]
    members.append(events)
devices = [set(e["device"] for e in m) for m in members]
print("member devices:", [sorted(d) for d in devices])
assert devices[0] and devices[1], "both members must get a share"
assert not (devices[0] & devices[1]), "a device's events went to both members"
for m in members:
    per = {}
    for e in m:
        per.setdefault(e["device"], []).append(e["data"]["n"])
    for d, ns in per.items():
        assert ns == list(range(1, 11)), f"{d}: not 1..10 in order: {ns}"
PYEOF
ok "each device to one member, in order, both members busy"

echo
echo "test_mqtt_integration: all checks passed"
