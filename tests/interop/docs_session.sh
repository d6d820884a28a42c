# shellcheck shell=bash
# Sourced by the session scripts that tests/interop/docs.py writes (one per document, run by
# test_docs.sh in a directory of its own, next to the server's ./drover-data). The blocks run
# in this shell, one after the other, as a user pastes them into one terminal: variables set by
# one block are there for the next. A failing command ends the session with the block's place
# in the document and its output.
#
# Environment (set by test_docs.sh): INTEROP_DIR, DOC_OUT (this session's output directory),
# DOC_PORTS (documented port=real port, comma-separated), DOC_PYTHON (the venv's python).

set -uo pipefail

DOC_LOC=""       # README.md:63, the block running now
DOC_LAST_OUT=""  # output file of the last block run
DOC_PREV_OUT=""  # and of the one before (for a doc-test-hidden block reading it)
DOC_STEP=0

_doc_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        printf '\nFAIL at %s (exit %s)\n' "$DOC_LOC" "$rc" >&2
        if [[ -n $DOC_LAST_OUT && -s $DOC_LAST_OUT ]]; then
            printf -- '--- its output (last 40 lines):\n' >&2
            tail -n 40 "$DOC_LAST_OUT" >&2
        fi
    fi
}
trap _doc_exit EXIT

_doc_begin() {
    DOC_LOC="$1"
    DOC_PREV_OUT="$DOC_LAST_OUT"
    DOC_STEP=$((DOC_STEP + 1))
    DOC_LAST_OUT="$DOC_OUT/out/$(printf '%03d' "$DOC_STEP").out"
    mkdir -p "$DOC_OUT/out"
    printf '%s\n' "$DOC_LOC" >"$DOC_OUT/current"
    printf -- '--- %s\n' "$DOC_LOC"
}

# doc_run LOC FILE RC: run a shell block in this shell; every command must succeed, and the last
# must exit RC (when RC is not 0, the block is one command).
doc_run() {
    _doc_begin "$1"
    local rc=0
    if [[ $3 -eq 0 ]]; then
        set -e
        # shellcheck disable=SC1090
        source "$2" >"$DOC_LAST_OUT" 2>&1 </dev/null
        set +e
    else
        # shellcheck disable=SC1090
        source "$2" >"$DOC_LAST_OUT" 2>&1 </dev/null
        rc=$?
        if [[ $rc -ne $3 ]]; then
            echo "expected exit $3, got $rc" >>"$DOC_LAST_OUT"
            exit 1
        fi
    fi
}

# doc_python LOC FILE RC: run a Python block with the interop venv's python.
doc_python() {
    _doc_begin "$1"
    local rc=0
    timeout 60 "$DOC_PYTHON" "$2" >"$DOC_LAST_OUT" 2>&1 </dev/null || rc=$?
    if [[ $rc -ne $3 ]]; then
        echo "expected exit $3, got $rc" >>"$DOC_LAST_OUT"
        exit 1
    fi
}

# doc_background LOC sh|python FILE NAME: start a block that runs until stopped (a subscriber, a
# stream); its output goes to $DOC_OUT/NAME. test_docs.sh ends it with the session.
doc_background() {
    _doc_begin "$1"
    local out="$DOC_OUT/$4"
    : >"$out"
    if [[ $2 == python ]]; then
        "$DOC_PYTHON" -u "$3" >"$out" 2>&1 </dev/null &
    else
        # shellcheck disable=SC1090
        (source "$3") >"$out" 2>&1 </dev/null &
    fi
    echo $! >"$DOC_OUT/$4.pid"
    DOC_LAST_OUT="$out"
}

# doc_expect LOC lines|json FILE: the last block's output is what the document shows.
doc_expect() {
    DOC_LOC="$1 (documented output)"
    "$DOC_PYTHON" "$INTEROP_DIR/docs.py" compare "$2" "$DOC_LAST_OUT" "$3" "$DOC_PORTS" || exit 1
}

doc_done() {
    DOC_LOC="end of document"
    echo "--- all blocks ran"
}

# ---------------------------------------------------------------------------------------------
# helpers for doc-test-hidden blocks

# wait_for NAME_OR_FILE REGEX [SECONDS]: wait (default 20 s) until the output of background block
# NAME (or FILE) has a line matching the extended REGEX.
wait_for() {
    local f="$1"
    [[ -f $f ]] || f="$DOC_OUT/$1"
    local deadline=$((SECONDS + ${3:-20}))
    until grep -Eq -- "$2" "$f" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            echo "no line matching /$2/ in $f within ${3:-20}s; it holds:" >&2
            tail -n 20 "$f" >&2
            return 1
        fi
        sleep 0.1
    done
}

# stop_background NAME: end background block NAME (and what it started) before the document
# goes on, e.g. a device whose connection a later example takes over.
stop_background() {
    local pid
    pid="$(cat "$DOC_OUT/$1.pid")"
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
}

# until_seen NAME REGEX CMD...: run CMD (a publish) until background block NAME's output has a
# line matching REGEX: a subscriber that has just started may not be subscribed yet, and a live
# subscription does not get what came before. One try a second, for at most 20 s.
until_seen() {
    local name="$1" re="$2"
    shift 2
    local deadline=$((SECONDS + 20))
    while true; do
        "$@" >/dev/null 2>&1 || true
        if wait_for "$name" "$re" 1 2>/dev/null; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            wait_for "$name" "$re" 0
            return 1
        fi
    done
}

# doc_status CODE curl ARGS...: a documented `curl ...   # CODE` (docs.py rewrites those): the
# command's own output as it is, and the server must answer CODE.
doc_status() {
    local want="$1" tmp status
    shift
    tmp="$(mktemp "$DOC_OUT/curl.XXXXXX")"
    "$@" -w '\n@@status %{http_code}\n' >"$tmp"
    status="$(sed -n 's/^@@status //p' "$tmp" | tail -1)"
    sed '/^@@status /d' "$tmp"
    rm -f "$tmp"
    if [[ $status != "$want" ]]; then
        echo "the document says HTTP $want; the server answered $status" >&2
        return 1
    fi
}

# doc_expect_background NAME: the output of background console block NAME so far is what the
# document shows under its command.
doc_expect_background() {
    "$DOC_PYTHON" "$INTEROP_DIR/docs.py" compare lines "$DOC_OUT/$1" "$DOC_OUT/blocks/$1.expected" \
        "$DOC_PORTS"
}
