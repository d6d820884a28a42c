#!/usr/bin/env bash
# Scenario (b): idle authenticated connections. COUNTS connections (d<i>@bench / pw) are opened
# from several 127.0.0.x source addresses and held for HOLD s; memory per connection =
# (broker VmRSS while holding - VmRSS before) / connections. Drover vs Mosquitto (password file).
# Counts above what RLIMIT_NOFILE allows (hard limit, minus a margin) are capped and say so.
# Environment: RUNS=3 COUNTS="10000 50000" HOLD=10 CONCURRENCY=200 TARGETS="drover mosquitto"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNTS=${COUNTS:-"10000 50000"}
HOLD=${HOLD:-10}
CONCURRENCY=${CONCURRENCY:-200}
TARGETS=${TARGETS:-"drover mosquitto"}
RESULTS=$RESULTS_DIR/idle-$STAMP.txt

build_all
machine_line | tee -a "$RESULTS"
nofile=$(raise_nofile)
cap=$((nofile - 1000))
log "open-file limit $nofile (hard $(ulimit -Hn)): at most $cap connections per process"

effective=()
max=0
for c in $COUNTS; do
    e=$c
    if ((c > cap)); then
        log "cannot hold $c connections with RLIMIT_NOFILE $nofile: measuring $cap instead (requested $c)"
        e=$cap
    fi
    effective+=("$e:$c")
    ((e > max)) && max=$e
done

PERSIST_DIR=$RUN_DIR/drover-idle-$STAMP
for target in $TARGETS; do
    for ec in "${effective[@]}"; do
        n=${ec%%:*}; requested=${ec##*:}
        for run in $(seq 1 "$RUNS"); do
            case $target in
            drover)
                start_drover
                if [[ ! -e $PERSIST_DIR/.provisioned-$max ]]; then
                    log "provisioning $max devices (sha512-crypt password hashes)"
                    provision "$max" --pass-sha512 "$PW_SHA512" --concurrency 4
                    touch "$PERSIST_DIR/.provisioned-$max"
                fi
                LABEL=drover ;;
            mosquitto) start_mosquitto "$(mosquitto_pwfile "$max")"; LABEL=mosquitto ;;
            rumqttd) RUMQTTD_AUTH_DEVICES=$max start_rumqttd; LABEL=rumqttd ;;
            *) echo "unknown target $target" >&2; exit 2 ;;
            esac
            sleep 2
            wait_quiet
            log "$LABEL: $n idle connections, run $run/$RUNS"
            lg idle --label "$LABEL" --addr "$MQTT_ADDR" --pid "$BROKER_PID" --connections "$n" \
                --user 'd{i}@bench' --pass pw --concurrency "$CONCURRENCY" --hold "$HOLD" |
                sed "s/\$/ requested=$requested run=$run/" | record || true
            stop_broker
        done
    done
done
rm -rf "$PERSIST_DIR"

echo
echo "## idle connections, medians ($RUNS runs), held $HOLD s"
"$LOADGEN" summarize --file "$RESULTS" --by label,connections,requested \
    --keys connected,failed,bytes_per_conn,rss_before_kib,rss_held_kib,connect_s,idle_cpu_pct | tee "$RESULTS.md"
