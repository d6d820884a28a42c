#!/usr/bin/env bash
# Run every tests/interop/test_*.sh (each starts its own server) and report
# "N passed, N failed". Exits non-zero if any test fails or if there are none.
#
#   tests/interop/run.sh                 # all tests
#   tests/interop/run.sh test_drg.sh     # selected tests (file names or paths)
#
# DROVER_BIN may point at a prebuilt binary; otherwise drover is built once here (debug).
# INTEROP_TEST_TIMEOUT (seconds, default 300) bounds each test file.
set -euo pipefail

INTEROP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$INTEROP_DIR/../.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
TIMEOUT="${INTEROP_TEST_TIMEOUT:-300}"

tests=()
if [[ $# -gt 0 ]]; then
    for t in "$@"; do
        [[ -f "$t" ]] || t="$INTEROP_DIR/$(basename "$t")"
        [[ -f "$t" ]] || { echo "no such test: $t" >&2; exit 2; }
        tests+=("$t")
    done
else
    shopt -s nullglob
    tests=("$INTEROP_DIR"/test_*.sh)
    shopt -u nullglob
fi
if [[ ${#tests[@]} -eq 0 ]]; then
    echo "no tests found in $INTEROP_DIR" >&2
    echo "0 passed, 0 failed"
    exit 1
fi

# Build once for all tests.
if [[ -z "${DROVER_BIN:-}" ]]; then
    echo "=== building drover (cargo build -p drover, debug)"
    (cd "$REPO_ROOT" && cargo build -p drover)
    DROVER_BIN="$REPO_ROOT/target/debug/drover"
fi
[[ -x "$DROVER_BIN" ]] || { echo "drover binary not found at $DROVER_BIN" >&2; exit 1; }
export DROVER_BIN

passed=0
failed=0
failed_names=()
for t in "${tests[@]}"; do
    name="$(basename "$t")"
    echo
    echo "=== $name"
    start=$SECONDS
    rc=0
    timeout --kill-after=10 "$TIMEOUT" bash "$t" </dev/null || rc=$?
    if [[ $rc -eq 0 ]]; then
        passed=$((passed + 1))
        echo "=== PASS $name ($((SECONDS - start))s)"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        if [[ $rc -eq 124 ]]; then
            echo "=== FAIL $name (timed out after ${TIMEOUT}s)"
        else
            echo "=== FAIL $name (exit $rc, $((SECONDS - start))s)"
        fi
    fi
done

echo
if [[ $failed -gt 0 ]]; then
    echo "failed: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
