#!/usr/bin/env bash
# Scenario (d): HTTP telemetry. CLIENTS keep-alive connections, each POSTing 64-byte JSON
# telemetry as its own device (d<i>@bench, HTTP Basic) to /v1/telemetry, one request at a time;
# requests/s, latency percentiles and server CPU per request over DURATION s after WARMUP s.
# Drover only (the MQTT brokers have no HTTP endpoint).
# Environment: RUNS=3 CLIENTS="1 16 64" DURATION=10 WARMUP=2 SIZE=64
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIENTS=${CLIENTS:-"1 16 64"}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SIZE=${SIZE:-64}
RESULTS=$RESULTS_DIR/http-$STAMP.txt

build_all
machine_line | tee -a "$RESULTS"
max=0
for c in $CLIENTS; do ((c > max)) && max=$c; done

for c in $CLIENTS; do
    for run in $(seq 1 "$RUNS"); do
        start_drover
        provision "$max"
        wait_quiet
        log "drover: HTTP telemetry, $c clients, run $run/$RUNS"
        lg http --label drover --addr "$HTTP_ADDR" --pid "$BROKER_PID" --clients "$c" \
            --duration "$DURATION" --warmup "$WARMUP" --size "$SIZE" --user 'd{i}@bench' --pass pw |
            sed "s/\$/ run=$run/" | record || true
        stop_broker
    done
done

echo
echo "## HTTP telemetry, medians ($RUNS runs), ${DURATION} s after ${WARMUP} s warm-up"
"$LOADGEN" summarize --file "$RESULTS" --by label,clients \
    --keys req_per_s,cpu_us_per_req,req_p50_us,req_p99_us,req_p999_us,errors,rss_peak_kib | tee "$RESULTS.md"
