#!/usr/bin/env bash
# Cost of the index stage's Elasticsearch client, one command:
#
#   bash bench/index.sh
#
# Builds the criterion benchmark aggregator/benches/index.rs with the `dist`
# profile (fat LTO, what packaging ships; `cargo bench --profile dist`) and runs
# it: 100,000 log lines as documents of about 330 bytes, written in bulk
# requests of 5,000 to an endpoint on the same machine that answers every request
# at once with all documents created (a tiny HTTP server on its own thread, so the
# client is measured and not a server). Two passes: `bulk client` (documents built
# beforehand: NDJSON body, HTTP, response) and `documents + bulk client` (also
# decoding the protobuf log batches and building the documents, as the stage does
# for every message). Times are CPU time of the benchmarking thread, which runs
# the client alone, so the figures are documents per second of one core even
# when other processes share the machine.
#
# Printed: criterion's estimates (throughput in documents per CPU-second), then a
# summary line per pass with documents/s per core and the ratio to the target of
# 100,000, and the machine.
#
# Environment:
#   BENCH_SKIP_BUILD=1   use the benchmark executable built last
#   BENCH_ARGS           extra criterion arguments, e.g. '--measurement-time 60'
#   BENCH_WORK_DIR       scratch directory (default: a new one under /tmp, removed
#                        at exit; see bench/scratch.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

NAME=vigil-bench-index
# shellcheck source=bench/scratch.sh
source "$ROOT/bench/scratch.sh"

log() { printf '[bench] %s\n' "$*" >&2; }

# --- build ------------------------------------------------------------------
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "building the index benchmark (dist profile)"
    (cd "$ROOT" && cargo bench --profile dist -p vigil-aggregator --bench index --no-run \
        --message-format json-render-diagnostics) >"$WORK/build.jsonl"
    BENCH=$(python3 - "$WORK/build.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "index" \
            and "bench" in message["target"]["kind"] and message.get("executable"):
        print(message["executable"])
PY
)
else
    BENCH=$(ls -t "$CARGO_TARGET"/dist/deps/index-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
fi
[[ -n "$BENCH" && -x "$BENCH" ]] || { log "the benchmark executable is missing"; exit 1; }
# A private copy: the shared target directory may be rebuilt while this runs.
cp "$BENCH" "$WORK/index-bench"
BENCH="$WORK/index-bench"

# --- measure ----------------------------------------------------------------
log "running the benchmark (about 2 minutes)"
# shellcheck disable=SC2086
CRITERION_HOME="$WORK/criterion" "$BENCH" --bench ${BENCH_ARGS:-} 2>&1 | tee "$WORK/bench.log" >&2

# --- report -----------------------------------------------------------------
echo
grep -E '^corpus: ' "$WORK/bench.log" || true
grep -E '^summary: ' "$WORK/bench.log" | sed 's/^summary: //'
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r); $(date -u '+%Y-%m-%d %H:%M UTC'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
