#!/usr/bin/env bash
# Idle CPU of vigil-agent with a Kafka client, one command:
#
#   bash bench/idle.sh            # a 400 MiB burst
#   bash bench/idle.sh --quick    # a 32 MiB burst, for trying
#
# Builds vigil-agent with the `dist` profile, starts a private tansu broker (memory
# storage) and the agent with a Kafka output and one log file, and measures the
# agent's CPU (utime+stime of all its threads, /proc/<pid>/stat):
#   1. after start: over its first minute (the start included) and over seconds
#      20-80 of its life, in 10 s slices;
#   2. after a burst: hard-links a file of 100-byte lines (made once and kept in
#      the cache directory) into the watched path, waits until every line is
#      acknowledged (`vigil_agent_log_lines_sent_total`) and the checkpoint file
#      holds the file's end, then measures the next 5 minutes, in 30 s slices.
# Prints the figures, each thread's share (librdkafka's threads are named rdk:*,
# tokio's workers tokio-runtime-w) and pass/fail against 0.1 % of a core; exits 1
# when a figure is above it.
#
# Environment:
#   BENCH_MIB          burst size in MiB (default 400; 32 with --quick)
#   BENCH_AFTER_SECONDS  how long to measure after the burst (default 300)
#   BENCH_CACHE_DIR    where the burst file is kept between runs
#                      (default ${TMPDIR:-/tmp}/vigil-bench-cache)
#   BENCH_WORK_DIR     scratch directory (default: a new one under /tmp, removed at
#                      exit; see bench/scratch.sh)
#   VIGIL_TANSU_BIN    the tansu executable (default ~/.cache/vigil/tansu/bin/tansu)
#   BENCH_SKIP_BUILD=1 use target/dist/vigil-agent as it is
#   BENCH_AGENT_YAML   extra top-level lines of the agent configuration
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOGBENCH="$ROOT/bench/logbench.py"
HELPER="$ROOT/bench/idlebench.py"
TANSU=${VIGIL_TANSU_BIN:-$HOME/.cache/vigil/tansu/bin/tansu}
LIMIT_PERCENT=0.1

MIB=${BENCH_MIB:-400}
for arg in "$@"; do
    case $arg in
        --quick) MIB=${BENCH_MIB:-32} ;;
        *) echo "usage: bash bench/idle.sh [--quick]" >&2; exit 2 ;;
    esac
done
AFTER_SECONDS=${BENCH_AFTER_SECONDS:-300}
CACHE=${BENCH_CACHE_DIR:-${TMPDIR:-/tmp}/vigil-bench-cache}

NAME=vigil-idle
# shellcheck source=bench/scratch.sh
source "$ROOT/bench/scratch.sh"

log() { printf '[idle] %s\n' "$*" >&2; }

dist_agent "${BENCH_SKIP_BUILD:-0}"

python3 - "$WORK/machine.json" <<'EOF'
import json, os, platform, sys, time
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
json.dump({"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, open(sys.argv[1], "w"))
EOF

# --- the burst file, made once --------------------------------------------------
mkdir -p "$CACHE"
BURST="$CACHE/lines-100-${MIB}mib.log"
if [[ ! -s $BURST.lines || ! -s $BURST ]]; then
    log "generating $MIB MiB of 100-byte lines into $CACHE"
    python3 "$LOGBENCH" generate "$BURST.tmp" 100 $((MIB * 1024 * 1024)) >"$BURST.lines.tmp"
    mv "$BURST.tmp" "$BURST"
    mv "$BURST.lines.tmp" "$BURST.lines"
fi
LINES=$(cat "$BURST.lines")
# The burst is hard-linked into the watched folder, which must be on the same file
# system; a copy in the scratch directory otherwise.
RUN="$WORK/agent"
mkdir -p "$RUN/data" "$RUN/logs"
if ! ln "$BURST" "$RUN/burst.log" 2>/dev/null; then
    cp "$BURST" "$RUN/burst.log"
fi
SOURCE="$RUN/burst.log"

# --- broker and agent ------------------------------------------------------------
start_tansu
log "tansu listens on 127.0.0.1:$BROKER_PORT"
(cd "$WORK/tansu" && RUST_LOG=warn NO_COLOR=1 "$TANSU" topic create \
    --broker "tcp://127.0.0.1:$BROKER_PORT" --partitions 1 idle.logs.raw) \
    >>"$WORK/tansu-cli.log" 2>&1

PORT=$(free_port)
cat >"$RUN/agent.yaml" <<EOF
resource: {id: bench, host_name: bench}
kafka:
  brokers: "127.0.0.1:$BROKER_PORT"
  topic_prefix: idle
data_dir: "$RUN/data"
http: {listen: "127.0.0.1:$PORT"}
logs:
  - {path: "$RUN/logs/app.log", dataset: bench}
host_metrics: {enabled: false}
${BENCH_AGENT_YAML:-}
EOF
VIGIL_LOG=warn "$AGENT" --config "$RUN/agent.yaml" >"$RUN/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
python3 "$LOGBENCH" wait-http "http://127.0.0.1:$PORT/ready" 30

log "after start: 80 s"
python3 "$HELPER" at-start --pid "$AGENT_PID" --seconds 80 --slice-s 10 >"$WORK/at-start.json"

log "burst: $MIB MiB, then ${AFTER_SECONDS} s at rest"
python3 "$HELPER" after-burst --pid "$AGENT_PID" --source "$SOURCE" \
    --target "$RUN/logs/app.log" --lines "$LINES" \
    --metrics-url "http://127.0.0.1:$PORT/metrics" \
    --checkpoints "$RUN/data/checkpoints.json" \
    --seconds "$AFTER_SECONDS" --slice-s 30 --timeout 600 >"$WORK/after-burst.json"
kill -0 "$AGENT_PID" || { log "the agent stopped"; cat "$RUN/agent.log" >&2; exit 1; }
stop "$AGENT_PID"
stop "$TANSU_PID"

echo
python3 "$HELPER" report "$WORK/machine.json" "$WORK/at-start.json" "$WORK/after-burst.json" \
    "$LIMIT_PERCENT"
