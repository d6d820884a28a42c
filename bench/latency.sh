#!/usr/bin/env bash
# Scenario (e): end-to-end latency device -> subscriber (Drover: -> MQTT integration) at a fixed
# rate: 50% of Drover's peak fan-in rate for that QoS, the same absolute rate for every server.
# Each payload carries its send time; p50/p90/p99/p99.9/max over DURATION s after WARMUP s.
# Environment: RUNS=3 QOS="0 1" PUBLISHERS=10 SIZE=64 DURATION=10 WARMUP=2
#   RATE_QOS0=, RATE_QOS1=   fixed rates (msg/s); default: 50% of Drover's median out_rate in the
#                            newest fan-in results (bench/results/fanin-*.txt), else measured now
#   TARGETS="drover mosquitto rumqttd"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PUBLISHERS=${PUBLISHERS:-10}
SIZE=${SIZE:-64}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
QOS=${QOS:-"0 1"}
TARGETS=${TARGETS:-"drover mosquitto rumqttd"}
RESULTS=$RESULTS_DIR/latency-$STAMP.txt

build_all
machine_line | tee -a "$RESULTS"

# Median Drover out_rate at QoS $1 in the newest fan-in results, or empty.
drover_peak() {
    local f
    for f in $(ls -t "$RESULTS_DIR"/fanin-*.txt 2>/dev/null || true); do
        local v
        v=$(grep '^RESULT ' "$f" | grep -E ' label=drover(-ws|-nosub)? ' | grep " qos=$1 " |
            grep -E ' lost=0 ' | sed -E 's/.* out_rate=([0-9.]+).*/\1/' | sort -g |
            awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}') || true
        if [[ -n $v ]]; then echo "$v"; return; fi
    done
}

for qos in $QOS; do
    var=RATE_QOS$qos
    rate=${!var:-}
    if [[ -z $rate ]]; then
        peak=$(drover_peak "$qos")
        if [[ -z $peak ]]; then
            log "no fan-in result for Drover at QoS $qos: measuring its peak (one run)"
            start_target drover "$PUBLISHERS"
            lg fanin --label "$LABEL" --addr "$MQTT_ADDR" --qos "$qos" --pid "$BROKER_PID" \
                --publishers "$PUBLISHERS" --messages 50000 --size "$SIZE" "${CREDS[@]}" \
                "${SUB_ARGS[@]}" | sed 's/$/ run=peak/' | tee -a "$RESULTS_DIR/fanin-$STAMP-peak.txt"
            stop_broker
            peak=$(drover_peak "$qos")
        fi
        [[ -n $peak ]] || { echo "cannot determine Drover's peak rate at QoS $qos" >&2; exit 1; }
        rate=$(awk -v p="$peak" 'BEGIN {printf "%d", p / 2}')
        log "QoS $qos: Drover's peak ${peak} msg/s -> rate $rate msg/s"
    fi
    for target in $TARGETS; do
        for run in $(seq 1 "$RUNS"); do
            start_target "$target" "$PUBLISHERS"
            wait_quiet
            log "$LABEL QoS $qos at $rate msg/s, run $run/$RUNS"
            lg latency --label "$LABEL" --addr "$MQTT_ADDR" --qos "$qos" --pid "$BROKER_PID" \
                --broker-cpu "$BROKER_CPU" --publishers "$PUBLISHERS" --size "$SIZE" \
                --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" --idle-timeout 10 \
                "${CREDS[@]}" "${SUB_ARGS[@]}" | sed "s/\$/ run=$run/" | record || true
            stop_broker
        done
    done
done

echo
echo "## latency medians ($RUNS runs): $PUBLISHERS publishers, $SIZE B, ${DURATION} s after ${WARMUP} s warm-up"
"$LOADGEN" summarize --file "$RESULTS" --by label,qos,rate \
    --keys achieved_rate,lost,e2e_p50_us,e2e_p99_us,e2e_p999_us,e2e_max_us,ack_p99_us,cpu_us_per_msg | tee "$RESULTS.md"
