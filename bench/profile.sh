#!/usr/bin/env bash
# CPU profile of Drover under the fan-in load (one run per QoS), with `perf record` (software
# event cpu-clock: hardware counters are often unavailable in VMs) and DWARF call graphs.
# Writes bench/results/profile-<time>-qos<q>.{data,self.txt,children.txt}: self time per function
# and inclusive time per function. Needs `perf`; falls back to valgrind --tool=callgrind
# (much slower, a smaller load) when perf cannot record.
# With HTTP=1 (default) also the HTTP telemetry endpoint under 16 keep-alive clients
# (profile-<time>-http.*).
# Environment: QOS="0 1" PUBLISHERS=10 MESSAGES=100000 SIZE=64 FREQ=499 HTTP=1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PUBLISHERS=${PUBLISHERS:-10}
MESSAGES=${MESSAGES:-100000}
SIZE=${SIZE:-64}
QOS=${QOS:-"0 1"}
FREQ=${FREQ:-499}

build_all
out=$RESULTS_DIR/profile-$STAMP
if perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; then
    for qos in $QOS; do
        start_target drover "$PUBLISHERS"
        log "profiling Drover, fan-in QoS $qos ($LABEL)"
        perf record -e cpu-clock -F "$FREQ" --call-graph dwarf,16384 -p "$BROKER_PID" \
            -o "$out-qos$qos.data" 2>"$out-qos$qos.perf.log" &
        perf_pid=$!
        sleep 1
        lg fanin --label "$LABEL" --addr "$MQTT_ADDR" --qos "$qos" --pid "$BROKER_PID" \
            --publishers "$PUBLISHERS" --messages "$MESSAGES" --size "$SIZE" "${CREDS[@]}" \
            "${SUB_ARGS[@]}" | tee -a "$out.txt" || true
        kill -INT "$perf_pid"; wait "$perf_pid" || true
        stop_broker
        perf report -i "$out-qos$qos.data" --no-children --sort symbol --stdio \
            --percent-limit 0.3 2>/dev/null | grep -v '^$' | head -400 >"$out-qos$qos.self.txt" || true
        perf report -i "$out-qos$qos.data" --children --sort symbol --stdio -g none \
            --percent-limit 2 2>/dev/null | grep -v '^$' | head -200 >"$out-qos$qos.children.txt" || true
        log "QoS $qos: $out-qos$qos.self.txt (self), $out-qos$qos.children.txt (inclusive)"
        # A flamegraph when inferno is installed (cargo install inferno).
        if command -v inferno-flamegraph >/dev/null && command -v inferno-collapse-perf >/dev/null; then
            perf script -i "$out-qos$qos.data" 2>/dev/null | inferno-collapse-perf 2>/dev/null |
                inferno-flamegraph --width 1600 \
                    --title "Drover fan-in, QoS $qos ($PUBLISHERS publishers x $MESSAGES x $SIZE B)" \
                    >"$out-qos$qos.svg" 2>/dev/null && log "QoS $qos: flamegraph $out-qos$qos.svg"
        fi
        grep -E '^ +[0-9.]+%' "$out-qos$qos.self.txt" | head -25 || true
        if command -v strace >/dev/null; then
            # System calls per message: strace -c over 5 s of the same load.
            start_target drover "$PUBLISHERS"
            lg fanin --label "$LABEL" --addr "$MQTT_ADDR" --qos "$qos" --publishers "$PUBLISHERS" \
                --messages "$MESSAGES" --size "$SIZE" "${CREDS[@]}" "${SUB_ARGS[@]}" >"$out-qos$qos.strace-run.txt" &
            lg_pid=$!
            sleep 3
            timeout -s INT 5 strace -f -c -p "$BROKER_PID" -o "$out-qos$qos.strace.txt" 2>/dev/null || true
            wait "$lg_pid" || true
            stop_broker
            log "QoS $qos: system calls over 5 s in $out-qos$qos.strace.txt"
            head -12 "$out-qos$qos.strace.txt" || true
        fi
    done
    if [[ ${HTTP:-1} == 1 ]]; then
        start_drover
        provision 16
        log "profiling Drover, HTTP telemetry with 16 clients"
        perf record -e cpu-clock -F "$FREQ" --call-graph dwarf,16384 -p "$BROKER_PID" \
            -o "$out-http.data" 2>"$out-http.perf.log" &
        perf_pid=$!
        sleep 1
        lg http --label drover --addr "$HTTP_ADDR" --pid "$BROKER_PID" --clients 16 --duration 10 \
            --warmup 1 | tee -a "$out.txt" || true
        kill -INT "$perf_pid"; wait "$perf_pid" || true
        stop_broker
        perf report -i "$out-http.data" --no-children --sort symbol --stdio \
            --percent-limit 0.3 2>/dev/null | grep -v '^$' | head -400 >"$out-http.self.txt" || true
        perf report -i "$out-http.data" --children --sort symbol --stdio -g none \
            --percent-limit 2 2>/dev/null | grep -v '^$' | head -200 >"$out-http.children.txt" || true
        log "HTTP: $out-http.self.txt (self), $out-http.children.txt (inclusive)"
    fi
else
    log "perf cannot record here: using valgrind --tool=callgrind with a small load"
    for qos in $QOS; do
        PORTS=$(free_ports 4); read -r api http mqtt imqtt <<<"$PORTS"
        DATA_DIR=$RUN_DIR/drover-data-$STAMP-cg; mkdir -p "$DATA_DIR"
        API_ADDR=127.0.0.1:$api; MQTT_ADDR=127.0.0.1:$mqtt
        args=(serve --data-dir "$DATA_DIR" --api-addr "$API_ADDR" --http-addr off --https-addr off
            --mqtt-addr "$MQTT_ADDR" --mqtts-addr off --admin-token "$TOKEN")
        INT_ADDR=""
        if drover_has_mqtt_integration; then
            INT_ADDR=127.0.0.1:$imqtt; args+=(--integration-mqtt-addr "$INT_ADDR" --integration-mqtts-addr off)
        fi
        valgrind --tool=callgrind --callgrind-out-file="$out-qos$qos.callgrind" "$DROVER" "${args[@]}" \
            >"$out-qos$qos.valgrind.log" 2>&1 &
        BROKER_PID=$!; BROKER_NAME=drover
        wait_pid_port "$BROKER_PID" "$API_ADDR"
        provision "$PUBLISHERS"; drover_subscriber
        lg fanin --label "$LABEL" --addr "$MQTT_ADDR" --qos "$qos" --publishers "$PUBLISHERS" \
            --messages 5000 --size "$SIZE" --user 'd{i}@bench' --pass pw "${SUB_ARGS[@]}" --timeout 600 || true
        stop_broker
        callgrind_annotate "$out-qos$qos.callgrind" | head -80 >"$out-qos$qos.self.txt"
        head -60 "$out-qos$qos.self.txt"
    done
fi
