#!/usr/bin/env bash
# Scenario (c): connect storm. COUNT devices (d<i>@bench / pw) connect at once (CONCURRENCY
# attempts in flight, default all) from several 127.0.0.x source addresses; time until all are
# CONNACKed, broker CPU per connect. Every run starts the server afresh (cold caches).
# With all attempts in flight the listen backlogs overflow and TCP's SYN retransmission timers
# (1 s, 3 s, 7 s, ...) dominate; CONCURRENCY=256 measures the server's own connect rate.
#   Drover: registry devices with sha512-crypt passwords (the registry's format).
#   Mosquitto: password file (mosquitto_passwd: PBKDF2-SHA512).  rumqttd: static plain-text table.
# Environment: RUNS=3 COUNT=10000 CONCURRENCY="$COUNT 256" TARGETS="drover mosquitto rumqttd"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNT=${COUNT:-10000}
CONCURRENCY=${CONCURRENCY:-"$COUNT 256"}
TARGETS=${TARGETS:-"drover mosquitto rumqttd"}
RESULTS=$RESULTS_DIR/storm-$STAMP.txt

build_all
machine_line | tee -a "$RESULTS"
nofile=$(raise_nofile)
if ((COUNT > nofile - 1000)); then
    echo "COUNT=$COUNT needs more than the open-file limit $nofile allows" >&2; exit 1
fi

PERSIST_DIR=$RUN_DIR/drover-storm-$STAMP
for conc in $CONCURRENCY; do
for target in $TARGETS; do
    for run in $(seq 1 "$RUNS"); do
        case $target in
        drover)
            start_drover
            if [[ ! -e $PERSIST_DIR/.provisioned ]]; then
                log "provisioning $COUNT devices (sha512-crypt password hashes)"
                provision "$COUNT" --pass-sha512 "$PW_SHA512" --concurrency 4
                touch "$PERSIST_DIR/.provisioned"
                # Restart: the first run must not profit from anything provisioning warmed up.
                stop_broker; start_drover
            fi
            LABEL=drover ;;
        mosquitto) start_mosquitto "$(mosquitto_pwfile "$COUNT")"; LABEL=mosquitto ;;
        rumqttd) RUMQTTD_AUTH_DEVICES=$COUNT start_rumqttd; LABEL=rumqttd ;;
        *) echo "unknown target $target" >&2; exit 2 ;;
        esac
        sleep 2
        wait_quiet
        log "$LABEL: storm of $COUNT connects (concurrency $conc), run $run/$RUNS"
        lg storm --label "$LABEL" --addr "$MQTT_ADDR" --pid "$BROKER_PID" --connections "$COUNT" \
            --user 'd{i}@bench' --pass pw --concurrency "$conc" --connect-timeout 300 |
            sed "s/\$/ run=$run/" | record || true
        stop_broker
    done
done
done
rm -rf "$PERSIST_DIR"

echo
echo "## connect storm, medians ($RUNS runs): $COUNT devices"
"$LOADGEN" summarize --file "$RESULTS" --by label,connections,concurrency \
    --keys connected,failed,all_connected_s,connects_per_s,cpu_us_per_connect,connack_p50_ms,connack_p99_ms,rss_peak_kib | tee "$RESULTS.md"
