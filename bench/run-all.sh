#!/usr/bin/env bash
# Every scenario in turn: (a) fan-in, (e) latency at 50% of Drover's fan-in peak, (b) idle
# connections, (c) connect storm, (d) HTTP telemetry. The tables of medians are collected in
# bench/results/summary-<time>.md. Environment variables of the scenario scripts apply
# (RUNS, TARGETS is not passed on: each scenario has its own default set of servers).
# SCENARIOS="fanin latency idle storm http" picks a subset.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
export RESULTS_DIR
mkdir -p "$RESULTS_DIR"
SUMMARY=$RESULTS_DIR/summary-$(date +%Y%m%d-%H%M%S).md
SCENARIOS=${SCENARIOS:-"fanin latency idle storm http"}

first=1
for s in $SCENARIOS; do
    if [[ $first == 0 ]]; then export SKIP_BUILD=1; fi
    first=0
    echo "=== $s ===" >&2
    out=$("$BENCH_DIR/$s.sh" | tee -a /dev/stderr | awk '/^## /{p=1} p') || echo "($s failed)" >&2
    printf '%s\n\n' "$out" >>"$SUMMARY"
done
echo "summary: $SUMMARY" >&2
cat "$SUMMARY"
