#!/usr/bin/env bash
# Executable documentation: the examples of README.md and docs/*.md, run as a user pastes them.
#
# Every ```sh/```console/```python block of the documents carries a marker (docs.py explains
# them): `<!-- doc-test -->` blocks run, `<!-- not tested: why -->` ones are skipped with their
# reason in the source; an unmarked block fails this test, so a new example joins the harness.
# Each document runs in a directory of its own against a fresh server (a generated admin token
# in ./drover-data/admin-token, as `drover serve` does it) with every listener on a free port;
# the documented ports (8011, 8088, 8443, 1883, 8883, 18883, 18884, and 9000/9001 of the webhook
# receivers in docs/integrations.md) are replaced by those in the commands, and back in their
# output before it is compared with the documented output. The server may reach 127.0.0.1
# (`--outbound-allow`), as a user trying webhooks locally starts it.
# HOME is the directory's home/ (so drg's and drover's configurations stay there), and PATH
# has `drover` (DROVER_BIN), drg, websocat, jq, mosquitto clients and the venv's python.
#
#   tests/interop/run.sh test_docs.sh
#   DOCS="docs/cli.md" tests/interop/run.sh test_docs.sh     # some documents only
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DOCS_ALL=(README.md docs/*.md)
# The documents with examples that run here (the others have only `not tested` blocks).
DOCS_RUN=(${DOCS:-README.md docs/devices.md docs/commands.md docs/integrations.md docs/cli.md docs/twins.md docs/azure.md docs/certificates.md docs/provisioning.md})
VENV="$INTEROP_DIR/.venv"

step "tools the documents use"
for t in jq mosquitto_pub mosquitto_sub openssl base64; do
    command -v "$t" >/dev/null || fail "$t is not installed (.ci/run's tools step installs it)"
done
[[ -n "$DRG_REAL" ]] || fail "drg is not installed (cargo install drg --debug)"
[[ -x "$VENV/bin/python" && -x "$VENV/bin/websocat" ]] ||
    fail "$VENV with websocat and paho-mqtt is missing (.ci/run's tools step creates it)"
ok "jq, mosquitto clients, drg, websocat, python venv"

step "every runnable block is marked"
run_ok "docs.py check" python3 "$INTEROP_DIR/docs.py" check "${DOCS_ALL[@]/#/$REPO_ROOT/}"

build_drover

# start_doc_server DIR: drover serve with ./drover-data in DIR, every listener on a free port, the
# admin token generated; sets DROVER_PID, DOC_PORTS.
start_doc_server() {
    local dir="$1" api http https mqtt mqtts imqtt imqtts sink1 sink2
    read -r api http https mqtt mqtts imqtt imqtts sink1 sink2 <<<"$(free_ports 9)"
    # 9000 and 9001: the webhook receivers of docs/integrations.md.
    DOC_PORTS="8011=$api,8088=$http,8443=$https,1883=$mqtt,8883=$mqtts,18883=$imqtt,18884=$imqtts,9000=$sink1,9001=$sink2"
    DROVER_LOG="$dir/drover.log"
    (cd "$dir" && exec "$DROVER_BIN" serve --data-dir ./drover-data --api-addr "127.0.0.1:$api" \
        --http-addr "127.0.0.1:$http" --https-addr "127.0.0.1:$https" \
        --mqtt-addr "127.0.0.1:$mqtt" --mqtts-addr "127.0.0.1:$mqtts" \
        --integration-mqtt-addr "127.0.0.1:$imqtt" --integration-mqtts-addr "127.0.0.1:$imqtts" \
        --outbound-allow 127.0.0.1 \
        >>"$DROVER_LOG" 2>&1 </dev/null) &
    DROVER_PID=$!
    local deadline=$((SECONDS + 60))
    until curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$api/.well-known/drogue-version" &&
        [[ -s $dir/drover-data/admin-token ]]; do
        kill -0 "$DROVER_PID" 2>/dev/null || fail "drover exited before answering (log: $DROVER_LOG)"
        ((SECONDS < deadline)) || fail "drover did not answer within 60s (log: $DROVER_LOG)"
        sleep 0.2
    done
}

# run_doc FILE: the document's blocks, in order, in one shell, against a fresh server.
run_doc() {
    local doc="$1" name dir
    name="$(basename "$doc" .md)"
    dir="$WORK_DIR/$name"
    mkdir -p "$dir/home" "$dir/bin" "$dir/session"
    ln -sf "$DROVER_BIN" "$dir/bin/drover"
    step "$doc"
    start_doc_server "$dir"
    ok "server up (ports: $DOC_PORTS)"
    run_ok "docs.py session $doc" python3 "$INTEROP_DIR/docs.py" session "$REPO_ROOT/$doc" \
        "$dir/session" "$DOC_PORTS"

    local rc=0 pid deadline=$((SECONDS + ${DOC_TIMEOUT:-240}))
    # setsid: the session leads a process group of its own (its pid is the group's id), so
    # whatever a block left running (subscribers, streams) ends with it.
    (cd "$dir" && exec env -u DRG_APP -u DRG_CONTEXT -u DROVER_CONFIG_DIR -u XDG_CONFIG_HOME \
        -u DROVER_CONTEXT -u DROVER_APP -u DROVER_TOKEN \
        HOME="$dir/home" PATH="$dir/bin:$VENV/bin:$PATH" RUST_BACKTRACE=0 \
        INTEROP_DIR="$INTEROP_DIR" DOC_OUT="$dir/session" DOC_PORTS="$DOC_PORTS" \
        DOC_PYTHON="$VENV/bin/python" \
        setsid bash "$dir/session/session.sh") </dev/null >"$dir/session.log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            echo "timed out after ${DOC_TIMEOUT:-240}s at $(cat "$dir/session/current" 2>/dev/null)" \
                >>"$dir/session.log"
            rc=124
            break
        fi
        sleep 0.2
    done
    [[ $rc -ne 0 ]] || wait "$pid" || rc=$?
    kill -TERM -- "-$pid" 2>/dev/null || true
    sed 's/^/    /' "$dir/session.log"
    stop_drover
    [[ $rc -eq 0 ]] || fail "$doc: a documented example failed (see above; work dir $dir)"
    ok "$doc: every tested block ran as documented"
}

for doc in "${DOCS_RUN[@]}"; do
    run_doc "$doc"
done
