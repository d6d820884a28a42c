# Shared by the scenario scripts (source it). Starts and stops the brokers on free ports, pinned
# to one core; runs the load generator pinned to the other.
#
# Environment (all optional):
#   RUNS=3            runs per configuration (medians are reported)
#   BROKER_CPU=0      core of the broker under test        GEN_CPU=1   core of the generator
#   TARGETS="drover mosquitto rumqttd"   which servers to measure (scenarios pick their subset)
#   DROVER=<repo>/target/release/drover  the server binary (built with `cargo build --release -p drover`
#                     unless SKIP_BUILD=1)
#   RUMQTTD=...       rumqttd binary (default: on PATH, else bench/.tools/bin/rumqttd, installed when missing)
#   RESULTS_DIR=bench/results   where RESULT lines and logs go

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
LOADGEN=$BENCH_DIR/target/release/loadgen
DROVER=${DROVER:-$ROOT/target/release/drover}
RUNS=${RUNS:-3}
BROKER_CPU=${BROKER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
RUN_DIR=$BENCH_DIR/run
# An admin token in Drover's own format (fixed, so runs are repeatable; loopback only).
TOKEN=${TOKEN:-drg_012345_01234567890123456789012345678920BetF}
# sha512-crypt of "pw" (what the registry would store), used when provisioning many devices.
PW_SHA512='$6$benchsaltbenchsa$AY9dff31wEDW2uVWqafhTR45Ebdg8ymXP0qxtBAPrayFXRSrYT7AKw4TLk3myUf/BojKSanuo1Rb7fy7/E7X90'

mkdir -p "$RESULTS_DIR" "$RUN_DIR"
STAMP=$(date +%Y%m%d-%H%M%S)

BROKER_PID=""
BROKER_NAME=""

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

build_all() {
    if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
        log "building the load generator (bench/target)"
        CARGO_TARGET_DIR=$BENCH_DIR/target cargo build --release --quiet \
            --manifest-path "$BENCH_DIR/loadgen/Cargo.toml"
        log "building drover (release)"
        (cd "$ROOT" && cargo build --release --quiet -p drover)
    fi
    [[ -x $LOADGEN ]] || { echo "missing $LOADGEN" >&2; exit 1; }
    [[ -x $DROVER ]] || { echo "missing $DROVER" >&2; exit 1; }
}

# The load generator, pinned to the generator core.
lg() { taskset -c "$GEN_CPU" "$LOADGEN" "$@"; }

free_ports() { "$LOADGEN" ports --count "$1"; }

ensure_rumqttd() {
    if [[ -n "${RUMQTTD:-}" ]]; then return; fi
    if command -v rumqttd >/dev/null 2>&1; then RUMQTTD=$(command -v rumqttd); return; fi
    RUMQTTD=$BENCH_DIR/.tools/bin/rumqttd
    if [[ ! -x $RUMQTTD ]]; then
        log "rumqttd not found: installing it with 'cargo install rumqttd --root bench/.tools' (takes minutes)"
        CARGO_TARGET_DIR=$BENCH_DIR/target/rumqttd-install \
            cargo install rumqttd --root "$BENCH_DIR/.tools"
    fi
}

drover_has_mqtt_integration() {
    "$DROVER" serve --help 2>/dev/null | grep -q -- '--integration-mqtt-addr'
}

wait_pid_port() { # pid addr
    local pid=$1 addr=$2
    for _ in $(seq 1 600); do
        kill -0 "$pid" 2>/dev/null || return 1
        if "$LOADGEN" wait --addr "$addr" --timeout 0.1 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# start_drover: sets BROKER_PID, MQTT_ADDR, HTTP_ADDR, API_ADDR, INT_ADDR (empty without the
# MQTT integration), DATA_DIR. DROVER_PORTS="api http mqtt integration" fixes the ports (a
# restart on the same ports); DROVER_EXTRA_ARGS are added to `drover serve`.
start_drover() {
    local ports api http mqtt imqtt
    read -r api http mqtt imqtt <<<"${DROVER_PORTS:-$(free_ports 4)}"
    # PERSIST_DIR: a data directory kept across restarts (registry provisioned once).
    DATA_DIR=${PERSIST_DIR:-$RUN_DIR/drover-data-$STAMP-$RANDOM}
    mkdir -p "$DATA_DIR"
    API_ADDR=127.0.0.1:$api
    HTTP_ADDR=127.0.0.1:$http
    MQTT_ADDR=127.0.0.1:$mqtt
    INT_ADDR=""
    local args=(serve --data-dir "$DATA_DIR" --api-addr "$API_ADDR" --http-addr "$HTTP_ADDR"
        --https-addr off --mqtt-addr "$MQTT_ADDR" --mqtts-addr off --admin-token "$TOKEN"
        --ws-max-lag 10000000)
    if drover_has_mqtt_integration; then
        INT_ADDR=127.0.0.1:$imqtt
        args+=(--integration-mqtt-addr "$INT_ADDR" --integration-mqtts-addr off)
        # Never disconnect the benchmark's consumer for lagging (the brokers do not either).
        if "$DROVER" serve --help 2>/dev/null | grep -q -- '--integration-max-lag'; then
            args+=(--integration-max-lag 0)
        fi
    fi
    # shellcheck disable=SC2206 # split on purpose: options and their values
    args+=(${DROVER_EXTRA_ARGS:-})
    local logf=$RESULTS_DIR/drover-$STAMP.log
    DROVER_LOG=${DROVER_LOG:-warn} taskset -c "$BROKER_CPU" "$DROVER" "${args[@]}" >>"$logf" 2>&1 &
    BROKER_PID=$!
    BROKER_NAME=drover
    if ! wait_pid_port "$BROKER_PID" "$MQTT_ADDR" || ! wait_pid_port "$BROKER_PID" "$API_ADDR"; then
        echo "drover did not start; see $logf" >&2; tail -20 "$logf" >&2; exit 1
    fi
}

# write_mosquitto_conf <port> [password_file]
write_mosquitto_conf() {
    local port=$1 pwfile=${2:-}
    local conf=$RUN_DIR/mosquitto-$port.conf
    {
        echo "# written by bench/lib.sh"
        echo "per_listener_settings false"
        echo "listener $port 127.0.0.1"
        echo "persistence false"
        echo "set_tcp_nodelay true"
        echo "max_connections -1"
        echo "max_inflight_messages 64"   # = Drover's outbound QoS 1 window
        echo "max_queued_messages 0"      # no limit: nothing dropped (Drover applies backpressure)
        echo "max_queued_bytes 0"
        echo "log_dest stderr"
        echo "log_type error"
        echo "log_type warning"
        echo "connection_messages false"
        if [[ -n $pwfile ]]; then
            echo "allow_anonymous false"
            echo "password_file $pwfile"
        else
            echo "allow_anonymous true"
        fi
    } >"$conf"
    echo "$conf"
}

# start_mosquitto [password_file]: sets BROKER_PID, MQTT_ADDR.
start_mosquitto() {
    local port; port=$(free_ports 1)
    local conf; conf=$(write_mosquitto_conf "$port" "${1:-}")
    MQTT_ADDR=127.0.0.1:$port
    taskset -c "$BROKER_CPU" mosquitto -c "$conf" >>"$RESULTS_DIR/mosquitto-$STAMP.log" 2>&1 &
    BROKER_PID=$!
    BROKER_NAME=mosquitto
    wait_pid_port "$BROKER_PID" "$MQTT_ADDR" || { echo "mosquitto did not start" >&2; exit 1; }
}

# start_rumqttd: sets BROKER_PID, MQTT_ADDR.
start_rumqttd() {
    ensure_rumqttd
    local port; port=$(free_ports 1)
    local conf=$RUN_DIR/rumqttd-$port.toml
    cat >"$conf" <<EOF
# written by bench/lib.sh
id = 0

[router]
id = 0
max_connections = 100010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 64
    dynamic_filters = true
EOF
    if [[ -n ${RUMQTTD_AUTH_DEVICES:-} ]]; then
        # Static user table: d<i>@bench = "pw" (rumqttd compares plain text).
        echo "    [v4.1.connections.auth]" >>"$conf"
        awk -v n="$RUMQTTD_AUTH_DEVICES" 'BEGIN {for (i = 1; i <= n; i++) printf "    \"d%d@bench\" = \"pw\"\n", i}' >>"$conf"
    fi
    MQTT_ADDR=127.0.0.1:$port
    taskset -c "$BROKER_CPU" "$RUMQTTD" -q -c "$conf" >>"$RESULTS_DIR/rumqttd-$STAMP.log" 2>&1 &
    BROKER_PID=$!
    BROKER_NAME=rumqttd
    wait_pid_port "$BROKER_PID" "$MQTT_ADDR" || { echo "rumqttd did not start" >&2; exit 1; }
}

stop_broker() {
    [[ -n $BROKER_PID ]] || return 0
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
    if [[ $BROKER_NAME == drover && -n ${DATA_DIR:-} && -z ${PERSIST_DIR:-} ]]; then
        rm -rf "$DATA_DIR"
    fi
}
trap stop_broker EXIT

provision() { # devices [extra args]
    local n=$1; shift
    lg provision --api "$API_ADDR" --token "$TOKEN" --app bench --devices "$n" "$@" >&2
}

# Raise the open-file limit as far as allowed; prints the limit.
raise_nofile() {
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    ulimit -n
}

# Machine, and which Drover: DROVER_COMMIT names the commit a given DROVER binary was built from
# (default: the checkout's HEAD, which is what build_all builds).
machine_line() {
    local commit=${DROVER_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD)$(
        git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null || echo '+uncommitted')}
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),"\
        "$(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r); drover $commit"\
        "($DROVER, sha256 $(sha256sum "$DROVER" | cut -c1-12)); mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}')"
}

# Records a RESULT line (from stdin) in the results file and echoes it.
record() { tee -a "$RESULTS"; }

# After start_drover: the subscriber of fan-in/latency runs, in SUB_ARGS, and the run's LABEL.
# The MQTT integration (app/bench, user admin + token) when this build has it; otherwise the
# WebSocket integration (SUB=ws, default) or no subscriber at all (SUB=none, ingestion only).
drover_subscriber() {
    if [[ -n $INT_ADDR ]]; then
        LABEL=drover
        SUB_ARGS=(--sub mqtt --sub-addr "$INT_ADDR" --sub-topic app/bench --sub-user admin
            --sub-pass "$TOKEN" --sub-client-id "lg-int-$RANDOM")
    elif [[ ${SUB:-ws} == ws ]]; then
        LABEL=drover-ws
        SUB_ARGS=(--sub ws --ws-addr "$API_ADDR" --ws-path /api/integrations/v1alpha1/ws/bench
            --ws-auth "admin:$TOKEN")
    else
        LABEL=drover-nosub
        SUB_ARGS=(--sub none)
    fi
}

# start_target <drover|mosquitto|rumqttd> <devices>: starts it; sets LABEL, SUB_ARGS, CREDS.
start_target() {
    case $1 in
    drover)
        start_drover
        provision "$2"
        drover_subscriber
        CREDS=(--user 'd{i}@bench' --pass pw)
        ;;
    mosquitto) start_mosquitto; LABEL=mosquitto; SUB_ARGS=(--sub mqtt --sub-topic '#'); CREDS=() ;;
    rumqttd) start_rumqttd; LABEL=rumqttd; SUB_ARGS=(--sub mqtt --sub-topic '#'); CREDS=() ;;
    *) echo "unknown target $1" >&2; exit 2 ;;
    esac
}

# A Mosquitto password file for d1@bench..d<n>@bench, password "pw" (hashed by mosquitto_passwd:
# PBKDF2-SHA512, as Mosquitto 2 does by default). Prints its path.
mosquitto_pwfile() {
    local n=$1 f=$RUN_DIR/mosquitto-pw-$1
    if [[ ! -s $f ]]; then
        awk -v n="$n" 'BEGIN {for (i = 1; i <= n; i++) printf "d%d@bench:pw\n", i}' >"$f.tmp"
        mosquitto_passwd -U "$f.tmp" && mv "$f.tmp" "$f"
    fi
    echo "$f"
}

# Waits (at most QUIET_WAIT s, default 900) until the machine is quiet: all cores together less
# than QUIET_PCT % busy (default 15) over 2 s, so other jobs (builds) do not share the cores
# with a measurement. Logs how long it waited, or that it gave up.
wait_quiet() {
    local limit=${QUIET_WAIT:-900} pct=${QUIET_PCT:-15} waited=0 busy
    while :; do
        busy=$(busy_pct)
        if ((busy < pct)); then
            ((waited > 0)) && log "machine quiet (${busy}% busy) after ${waited} s"
            return 0
        fi
        if ((waited >= limit)); then
            log "machine still ${busy}% busy after ${waited} s: measuring anyway (see core_other_pct)"
            return 0
        fi
        ((waited == 0)) && log "machine busy (${busy}% of all cores): waiting for it to be quiet"
        sleep 3
        waited=$((waited + 5))
    done
}

# Percent of all cores busy over 2 s (from /proc/stat).
busy_pct() {
    local a b
    a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
    local busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]+b[8]) - (a[1]+a[2]+a[3]+a[6]+a[7]+a[8]) ))
    local total=$(( busy + (b[4]+b[5]) - (a[4]+a[5]) ))
    echo $(( total > 0 ? busy * 100 / total : 0 ))
}
