#!/usr/bin/env bash
# Scenario (a): MQTT fan-in, QoS 0 and QoS 1.
# PUBLISHERS x MESSAGES x SIZE bytes -> one subscriber; RUNS runs per server and QoS, medians.
#   Drover:     devices authenticated (d<i>@bench / pw), durable log, one MQTT-integration
#               subscriber on app/bench (user admin + admin token). Without the MQTT integration
#               in this build: a WebSocket-integration subscriber instead (SUB=ws), or SUB=none
#               (ingestion only); labelled drover-ws / drover-nosub.
#   Mosquitto, rumqttd: anonymous publishers, one '#' subscriber.
# Environment: RUNS=3 PUBLISHERS=10 MESSAGES=100000 SIZE=64 WINDOW=32 QOS="0 1"
#              TARGETS="drover mosquitto rumqttd" SUB=ws|none (Drover fallback)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PUBLISHERS=${PUBLISHERS:-10}
MESSAGES=${MESSAGES:-100000}
SIZE=${SIZE:-64}
WINDOW=${WINDOW:-32}
QOS=${QOS:-"0 1"}
TARGETS=${TARGETS:-"drover mosquitto rumqttd"}
RESULTS=$RESULTS_DIR/fanin-$STAMP.txt

build_all
machine_line | tee -a "$RESULTS"
log "fan-in: $PUBLISHERS publishers x $MESSAGES x $SIZE B, QoS {$QOS}, window $WINDOW, $RUNS runs; results in $RESULTS"

common=(--publishers "$PUBLISHERS" --messages "$MESSAGES" --size "$SIZE" --window "$WINDOW"
    --timeout 600 --idle-timeout 10)

for qos in $QOS; do
    for target in $TARGETS; do
        for run in $(seq 1 "$RUNS"); do
            start_target "$target" "$PUBLISHERS"
            wait_quiet
            log "$LABEL QoS $qos run $run/$RUNS (pid $BROKER_PID, $MQTT_ADDR)"
            lg fanin --label "$LABEL" --addr "$MQTT_ADDR" --qos "$qos" --pid "$BROKER_PID" --broker-cpu "$BROKER_CPU" \
                "${common[@]}" "${CREDS[@]}" "${SUB_ARGS[@]}" | sed "s/\$/ run=$run/" | record || true
            stop_broker
        done
    done
done

echo
echo "## fan-in medians ($RUNS runs): $PUBLISHERS publishers x $MESSAGES x $SIZE B, window $WINDOW"
"$LOADGEN" summarize --file "$RESULTS" --by label,qos \
    --keys in_rate,out_rate,cpu_us_per_msg,rss_peak_kib,lost,ack_p50_us,ack_p99_us | tee "$RESULTS.md"
