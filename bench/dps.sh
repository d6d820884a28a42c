#!/usr/bin/env bash
# Scenario: device provisioning (Azure DPS compatible). An enrollment group (symmetric key),
# then COUNT devices register over MQTT exactly as Azure's SDKs do (DPS username and SAS token,
# SUBSCRIBE, register, poll, DISCONNECT), CONCURRENCY at a time; each registration creates its
# device (with its SAS credential) in the embedded SQLite registry, records the registration
# and appends an event. Registrations per second and server CPU per registration.
# Drover only (no other open broker provisions). Azure's published limit: 1,000 registrations
# per minute per DPS instance.
# Environment: RUNS=3 COUNT=10000 CONCURRENCY="16 64"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNT=${COUNT:-10000}
CONCURRENCY=${CONCURRENCY:-"16 64"}
RESULTS=$RESULTS_DIR/dps-$STAMP.txt

build_all
machine_line | tee -a "$RESULTS"
for conc in $CONCURRENCY; do
    for run in $(seq 1 "$RUNS"); do
        start_drover
        wait_quiet
        log "drover: $COUNT registrations, concurrency $conc, run $run/$RUNS"
        lg dps --label drover --addr "$MQTT_ADDR" --api "$API_ADDR" --token "$TOKEN" --pid "$BROKER_PID" \
            --registrations "$COUNT" --concurrency "$conc" |
            sed "s/\$/ run=$run/" | record || true
        stop_broker
    done
done

echo
echo "## Provisioning over MQTT, medians ($RUNS runs), $COUNT registrations"
"$LOADGEN" summarize --file "$RESULTS" --by label,concurrency \
    --keys registrations_per_s,cpu_ms_per_registration,failed | tee "$RESULTS.md"
