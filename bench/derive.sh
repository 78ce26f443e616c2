#!/usr/bin/env bash
# Throughput of the aggregator's derive stage, without Kafka, one command:
#
#   bash bench/derive.sh
#
# Builds the criterion benchmark aggregator/benches/derive.rs with the `dist`
# profile (fat LTO, what packaging ships; `cargo bench --profile dist`) and runs it
# on its fixed corpus: 200 switches x 48 IF-MIB ports and 200 hosts with the
# agent's host metrics, 13 polls 10 s apart, the first warming the engine (counter
# baselines), the other 12 (1.3 million raw samples) measured. Two passes over
# the same encoded messages: decode; decode + derive + encode (rates, KPIs written
# straight into encoded batches, windows closed once per poll, partials merged
# back, everything the stage would publish encoded). Times are CPU time of the benchmarking thread, so the
# figures are samples per second of one core even when other processes share the
# machine.
#
# Printed (bench/derive_report.py): raw samples/s per core of each pass, the
# ratio to the target of 1,000,000, the share of decoding and of deriving and
# encoding in the full pass; then a profile of the full pass under `perf record` (installed with
# apt-get if missing): the top symbols by self time, Vigil's functions by
# inclusive time, and the lines of Vigil's sources where the time is spent. If perf
# cannot sample here, the shares of the steps are the only breakdown.
#
# Environment:
#   BENCH_SKIP_BUILD=1      use the benchmark executable built last
#   BENCH_PROFILE_SECONDS   seconds of the full pass under perf (default 20; 0 skips)
#   BENCH_TOP               symbols of the profile printed (default 15)
#   BENCH_ARGS              extra criterion arguments, e.g. '--measurement-time 60'
#   BENCH_ALLOCATOR         `jemalloc` or `mimalloc`: run with Debian's build of that
#                           allocator preloaded in place of glibc's malloc (installed
#                           with apt-get if missing), to see what an allocator changes
#   BENCH_WORK_DIR          scratch directory (default: a new one under /tmp, removed
#                           at exit; see bench/scratch.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PROFILE_SECONDS=${BENCH_PROFILE_SECONDS:-20}
TOP=${BENCH_TOP:-15}

NAME=vigil-bench-derive
# shellcheck source=bench/scratch.sh
source "$ROOT/bench/scratch.sh"

log() { printf '[bench] %s\n' "$*" >&2; }

# --- build ------------------------------------------------------------------
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "building the derive benchmark (dist profile)"
    (cd "$ROOT" && cargo bench --profile dist -p vigil-aggregator --bench derive --no-run \
        --message-format json-render-diagnostics) >"$WORK/build.jsonl"
    BENCH=$(python3 - "$WORK/build.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "derive" \
            and "bench" in message["target"]["kind"] and message.get("executable"):
        print(message["executable"])
EOF
)
else
    BENCH=$(ls -t "$CARGO_TARGET"/dist/deps/derive-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
fi
[[ -n "$BENCH" && -x "$BENCH" ]] || { log "the benchmark executable is missing"; exit 1; }
# A private copy: the shared target directory may be rebuilt while this runs.
cp "$BENCH" "$WORK/derive-bench"
BENCH="$WORK/derive-bench"

PRELOAD=
case "${BENCH_ALLOCATOR:-}" in
    "") ;;
    jemalloc) PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 PACKAGE=libjemalloc2 ;;
    mimalloc) PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2 PACKAGE=libmimalloc2.0 ;;
    *) log "BENCH_ALLOCATOR must be jemalloc or mimalloc"; exit 1 ;;
esac
if [[ -n $PRELOAD && ! -e $PRELOAD ]]; then
    log "installing $PACKAGE"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$PACKAGE" >/dev/null
fi
# Prefix of the benchmark's command lines.
RUN=()
[[ -z $PRELOAD ]] || RUN=(env "LD_PRELOAD=$PRELOAD")

# --- measure ----------------------------------------------------------------
log "running the benchmark (about 3 minutes)"
# shellcheck disable=SC2086
CRITERION_HOME="$WORK/criterion" "${RUN[@]+"${RUN[@]}"}" "$BENCH" --bench ${BENCH_ARGS:-} 2>&1 \
    | tee "$WORK/bench.log" >&2

# --- profile ----------------------------------------------------------------
PROFILED=0
if ((PROFILE_SECONDS > 0)); then
    if ! command -v perf >/dev/null; then
        log "installing perf"
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null 2>&1 || true
    fi
    if command -v perf >/dev/null; then
        log "profiling the full pass for ${PROFILE_SECONDS}s with perf"
        mkfifo "$WORK/perf.control"
        # Sampling starts when the benchmark has built its corpus (it writes
        # `enable` to the control FIFO), so only the passes are profiled. Call
        # chains are unwound with DWARF (the `dist` profile keeps line tables), so
        # that time in inlined code is found in the function it was written in.
        if DERIVE_BENCH_PERF_CONTROL="$WORK/perf.control" CRITERION_HOME="$WORK/criterion-profile" \
            perf record -e cpu-clock -F 499 --call-graph dwarf,32768 -D -1 \
            --control "fifo:$WORK/perf.control" -o "$WORK/perf.data" -- \
            "${RUN[@]+"${RUN[@]}"}" "$BENCH" --bench --profile-time "$PROFILE_SECONDS" decode_derive_encode \
            >"$WORK/perf.log" 2>&1; then
            perf report -i "$WORK/perf.data" --no-children --sort symbol -g none --stdio -q \
                --percent-limit 0.3 >"$WORK/perf-self.txt" 2>/dev/null || true
            perf script -i "$WORK/perf.data" -F period,ip,sym,srcline --inline \
                >"$WORK/perf-script.txt" 2>/dev/null || true
            if [[ -s "$WORK/perf-self.txt" && -s "$WORK/perf-script.txt" ]]; then
                PROFILED=1
            fi
        fi
        ((PROFILED)) || { log "perf could not sample here:"; tail -5 "$WORK/perf.log" >&2; }
    fi
fi

# --- report -----------------------------------------------------------------
echo
python3 "$ROOT/bench/derive_report.py" figures "$WORK/criterion" "$WORK/bench.log"
echo
if ((PROFILED)); then
    python3 "$ROOT/bench/derive_report.py" profile "$WORK/perf-self.txt" "$WORK/perf-script.txt" \
        "$ROOT" "$TOP"
elif ((PROFILE_SECONDS > 0)); then
    echo "no perf profile (perf missing or unable to sample here); the CPU time of each step"
    echo "above, timed within one pass, is the breakdown"
fi
echo
[[ -z $PRELOAD ]] || echo "allocator: $PRELOAD (preloaded)"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r); $(date -u '+%Y-%m-%d %H:%M UTC'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
