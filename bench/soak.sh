#!/usr/bin/env bash
# Soak test (issue 21): DURATION s of mixed load against one Drover — MQTT devices at QoS 1
# (answering commands) and QoS 0, HTTP devices (keep-alive, Basic auth), a durable
# MQTT-integration consumer (persistent session on app/soak), shared-group workers and
# WebSocket consumers joining and leaving, commands through the API, registry changes (devices
# created, relabelled, read back, deleted) — with ONE restart of the server (SIGTERM, same data
# directory and ports) at RESTART_AT s. The server's RSS and open files are sampled every 10 s;
# at the end every acknowledged message (QoS 1 PUBACK, HTTP 202) is looked up in the durable
# consumer's deliveries and in a full read of the stream (WebSocket from=earliest).
#
# Usage: bench/soak.sh [--duration SECONDS]        (default 3600)
# Environment: RESTART_AT (default DURATION/2), SOAK_ARGS (extra loadgen soak options, e.g.
#   "--qos1-rate 50"), KEEP_DATA=1 (keep the data directory after a passing run), plus lib.sh's
#   (SKIP_BUILD=1 DROVER=/path/to/drover to use a given binary).
# Results: bench/results/soak-<date>/ — soak.txt (PROGRESS lines every 10 s, RESULT, OUTCOME
#   counts), samples.csv, summary.txt, events.txt (restart), drover-*.log, machine.txt.
# Exit status: 0 when every acknowledged message was found, 1 otherwise (or on a crash).

DURATION=3600
while (($#)); do
    case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --duration=*) DURATION=${1#*=}; shift ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
OUT=${RESULTS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/results}/soak-$(date +%Y%m%d-%H%M%S)
RESULTS_DIR=$OUT
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RESTART_AT=${RESTART_AT:-$((DURATION / 2))}
APP=soak
CSV=$OUT/samples.csv
EVENTS=$OUT/events.txt
SAMPLER_PID=""
LG_PID=""

event() { echo "$(date -u +%FT%TZ) t=$(($(date +%s) - T0)) $*" | tee -a "$EVENTS" >&2; }

cleanup() {
    if [[ -n $LG_PID ]]; then kill "$LG_PID" 2>/dev/null || true; fi
    rm -f "$OUT/.sampling"
    if [[ -n $SAMPLER_PID ]]; then wait "$SAMPLER_PID" 2>/dev/null || true; fi
    stop_broker
}
trap cleanup EXIT

# Sets STAT_FIELDS to "busy_pct,steal_pct": all cores together since the previous call (from
# /proc/stat's cpu line; empty fields on the first call).
PREV_STAT=()
STAT_FIELDS=","
stat_delta() {
    local -a b a
    read -r -a b < <(head -1 /proc/stat)
    a=("${PREV_STAT[@]}")
    PREV_STAT=("${b[@]}")
    if ((${#a[@]} == 0)); then STAT_FIELDS=","; return; fi
    local busy=$(((b[1] + b[2] + b[3] + b[6] + b[7] + b[8]) - (a[1] + a[2] + a[3] + a[6] + a[7] + a[8])))
    local total=$((busy + (b[4] + b[5]) - (a[4] + a[5])))
    local steal=$((b[8] - a[8]))
    STAT_FIELDS=$(awk -v b="$busy" -v s="$steal" -v t="$total" \
        'BEGIN {if (t > 0) printf "%.1f,%.1f", b*100/t, s*100/t; else print ","}')
}

# Every 10 s: t_s,phase,pid,rss_kib,fds,threads,cpu_ticks,load1,busy_pct,steal_pct of the server
# (pid and phase from files the restart rewrites). Empty fields while no server runs.
sampler() {
    echo "t_s,phase,pid,rss_kib,fds,threads,cpu_ticks,load1,busy_pct,steal_pct" >"$CSV"
    local next=$T0 pid phase rss fds threads cpu load1
    while [[ -e $OUT/.sampling ]]; do
        pid=$(cat "$OUT/server.pid"); phase=$(cat "$OUT/phase")
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        threads=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        fds=""
        if [[ -n $rss ]]; then fds=$( (find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null || true) | wc -l); fi
        cpu=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$pid/stat" 2>/dev/null || true)
        load1=$(cut -d' ' -f1 /proc/loadavg)
        stat_delta
        echo "$(($(date +%s) - T0)),$phase,$pid,$rss,$fds,$threads,$cpu,$load1,$STAT_FIELDS" >>"$CSV"
        next=$((next + 10))
        while [[ -e $OUT/.sampling ]] && (($(date +%s) < next)); do sleep 1; done
    done
}

# SIGTERM, wait for the exit (60 s, then SIGKILL — recorded), start again on the same data
# directory and ports.
restart_drover() {
    local old=$BROKER_PID t1 rc
    event "restart: SIGTERM to $old"
    t1=$(date +%s.%N)
    kill -TERM "$old"
    for _ in $(seq 1 600); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$old" 2>/dev/null; then
        event "restart: $old still running 60 s after SIGTERM: SIGKILL"
        kill -KILL "$old"
    fi
    rc=0; wait "$old" 2>/dev/null || rc=$?
    event "restart: $old exited (status $rc) after $(awk -v a="$t1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b-a}') s"
    echo 2 >"$OUT/phase"
    t1=$(date +%s.%N)
    start_drover
    echo "$BROKER_PID" >"$OUT/server.pid"
    event "restart: new server $BROKER_PID listening after $(awk -v a="$t1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b-a}') s"
}

build_all
raise_nofile >/dev/null
machine_line | tee "$OUT/machine.txt"
DROVER_PORTS=$(free_ports 4)
PERSIST_DIR=$OUT/data
# Retention far above what the run writes: the final read must find everything.
DROVER_EXTRA_ARGS="--event-retention-bytes 17179869184"
T0=$(date +%s)
start_drover
[[ -n $INT_ADDR ]] || { echo "this drover has no MQTT integration (--integration-mqtt-addr)" >&2; exit 1; }
echo "$BROKER_PID" >"$OUT/server.pid"; echo 1 >"$OUT/phase"
event "start: drover $BROKER_PID (api $API_ADDR, http $HTTP_ADDR, mqtt $MQTT_ADDR, integration $INT_ADDR), duration ${DURATION} s, restart at ${RESTART_AT} s"
# d1..d4 QoS 1, d5..d6 QoS 0, d7..d8 HTTP (the loadgen's defaults; more with SOAK_ARGS need more)
lg provision --api "$API_ADDR" --token "$TOKEN" --app "$APP" --devices "${SOAK_DEVICES:-8}" >&2

touch "$OUT/.sampling"
sampler &
SAMPLER_PID=$!
# shellcheck disable=SC2086 # SOAK_ARGS: options to split
taskset -c "$GEN_CPU" "$LOADGEN" soak --mqtt "$MQTT_ADDR" --http "$HTTP_ADDR" --api "$API_ADDR" --int "$INT_ADDR" \
    --token "$TOKEN" --app "$APP" --duration "$DURATION" --missing-file "$OUT/missing.txt" \
    ${SOAK_ARGS:-} >"$OUT/soak.txt" 2>"$OUT/soak.err" &
LG_PID=$!
event "start: loadgen $LG_PID"

while kill -0 "$LG_PID" 2>/dev/null && (($(date +%s) - T0 < RESTART_AT)); do sleep 1; done
if kill -0 "$LG_PID" 2>/dev/null; then
    kill -0 "$BROKER_PID" 2>/dev/null || event "server $BROKER_PID is gone before the restart (crashed?)"
    restart_drover
fi
RC=0; wait "$LG_PID" || RC=$?
LG_PID=""
event "loadgen exited with status $RC"
kill -0 "$BROKER_PID" 2>/dev/null || { event "server $BROKER_PID is gone at the end (crashed?)"; RC=1; }
rm -f "$OUT/.sampling"; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
t1=$(date +%s.%N)
stop_broker
event "final stop: server exited after $(awk -v a="$t1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b-a}') s"

{
    cat "$OUT/machine.txt"
    echo "command: bench/soak.sh --duration $DURATION (RESTART_AT=$RESTART_AT SOAK_ARGS='${SOAK_ARGS:-}')"
    cat "$EVENTS"
    grep -E '^(RESULT|OUTCOME|MISSING)' "$OUT/soak.txt" || true
    grep -E '^PROGRESS' "$OUT/soak.txt" | tail -1 || true
    "$LOADGEN" soak-summary --csv "$CSV" || true
    cat "$OUT/soak.err"
} | tee "$OUT/summary.txt"
if ((RC == 0)) && [[ ${KEEP_DATA:-0} != 1 ]]; then rm -rf "$PERSIST_DIR"; fi
exit "$RC"
