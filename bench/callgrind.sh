#!/usr/bin/env bash
# Instructions per message of Drover under the fan-in load, counted by valgrind's callgrind:
# repeatable even on a busy machine (unlike CPU time), so it is what before/after comparisons
# of a change use. One Drover under callgrind (instrumentation off at start); a small warm-up
# run (connections, cached authentication), then two runs of different sizes, each dumped
# separately: instructions per message = (Ir of the big run - Ir of the small run) / (the
# difference in messages), which cancels what every run costs regardless of its size
# (connecting, subscribing). Prints one CALLGRIND line per QoS; the profiles of the big runs
# stay in bench/results/callgrind-<time>-qos<q>.out.* (callgrind_annotate them).
# Environment: QOS="0 1" PUBLISHERS=10 SMALL=1000 BIG=4000 (messages per publisher) SIZE=64
#              DROVER=target/release/drover (SKIP_BUILD=1 to use it as it is)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PUBLISHERS=${PUBLISHERS:-10}
SMALL=${SMALL:-1000}
BIG=${BIG:-4000}
SIZE=${SIZE:-64}
QOS=${QOS:-"0 1"}

command -v valgrind >/dev/null || { echo "needs valgrind (Debian package valgrind)" >&2; exit 1; }
build_all
out=$RESULTS_DIR/callgrind-$STAMP

# Total Ir of one dump file.
ir_of() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

for qos in $QOS; do
    read -r api mqtt imqtt <<<"$(free_ports 3)"
    DATA_DIR=$RUN_DIR/drover-data-$STAMP-cg$qos; mkdir -p "$DATA_DIR"
    API_ADDR=127.0.0.1:$api; MQTT_ADDR=127.0.0.1:$mqtt; INT_ADDR=127.0.0.1:$imqtt
    DROVER_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$out-qos$qos.out" "$DROVER" serve --data-dir "$DATA_DIR" \
        --api-addr "$API_ADDR" --http-addr off --https-addr off --mqtt-addr "$MQTT_ADDR" \
        --mqtts-addr off --admin-token "$TOKEN" --integration-mqtt-addr "$INT_ADDR" \
        --integration-mqtts-addr off --integration-max-lag 0 >"$out-qos$qos.valgrind.log" 2>&1 &
    BROKER_PID=$!; BROKER_NAME=drover
    wait_pid_port "$BROKER_PID" "$MQTT_ADDR" || { echo "drover did not start" >&2; exit 1; }
    wait_pid_port "$BROKER_PID" "$API_ADDR" || { echo "drover did not start" >&2; exit 1; }
    provision "$PUBLISHERS"
    drover_subscriber
    callgrind_control -i on "$BROKER_PID" >/dev/null
    run() { # messages per publisher
        lg fanin --label "$LABEL" --addr "$MQTT_ADDR" --qos "$qos" --publishers "$PUBLISHERS" \
            --messages "$1" --size "$SIZE" --user 'd{i}@bench' --pass pw "${SUB_ARGS[@]}" \
            --timeout 900 --idle-timeout 30 >>"$out-qos$qos.runs.txt" || true
    }
    run 200
    callgrind_control -z "$BROKER_PID" >/dev/null
    run "$SMALL"
    callgrind_control -d small "$BROKER_PID" >/dev/null
    run "$BIG"
    callgrind_control -d big "$BROKER_PID" >/dev/null
    stop_broker
    # Dumps are numbered in order (the zeroing writes none).
    small_f=$out-qos$qos.out.1; big_f=$out-qos$qos.out.2
    ir_small=$(ir_of "$small_f"); ir_big=$(ir_of "$big_f")
    per_msg=$(( (ir_big - ir_small) / ((BIG - SMALL) * PUBLISHERS) ))
    echo "CALLGRIND qos=$qos publishers=$PUBLISHERS small=$SMALL big=$BIG ir_small=$ir_small ir_big=$ir_big ir_per_msg=$per_msg" \
        | tee -a "$out.txt"
    grep -h '^RESULT' "$out-qos$qos.runs.txt" | grep -o 'lost=[0-9]*' | tr '\n' ' '; echo
done
