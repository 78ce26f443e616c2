#!/usr/bin/env bash
# Log-shipping benchmark of vigil-agent, one command:
#
#   bash bench/logs.sh
#
# Builds vigil-agent with the `dist` profile (what packaging ships), starts a
# private tansu broker (memory storage) on a free port, generates files of 100-byte
# and 1 KiB lines, and measures for each line size:
#   - vigil-agent -> tansu with compression.type lz4 and zstd,
#   - vigil-agent with `--output discard` (tail-only: read, batch, encode, drop),
#   - rsyslog imfile -> omfile (the peer's tail-only cost; its Kafka output cannot
#     talk to tansu), installed with apt-get if missing;
# and, parsed at the source, vigil-agent -> tansu (lz4) with
#   - 300-byte JSON lines through the json parser and the timestamp step (json-300),
#   - 200-byte nginx access lines through the nginx_access preset (access-200).
# Each run starts a fresh shipper, waits until it is ready and idle, then hard-links
# the prepared file into the watched path (the shipper sees a new file and reads it
# from its beginning) and waits until every line is shipped: the agent's
# `vigil_agent_log_lines_sent_total` (counted on acknowledgement) reaches the line
# count, or rsyslog's output file reaches the input size. Reported: MiB/s (wall),
# MiB per CPU-second of the shipper process (= per core), CPU seconds per GiB,
# peak RSS (VmHWM) and idle RSS (VmRSS when idle before and after the load).
#
# Environment:
#   BENCH_MIB        size of each test file in MiB (default 256)
#   BENCH_WORK_DIR   scratch directory (default: a new one under /tmp, removed at exit;
#                    see bench/scratch.sh)
#   VIGIL_TANSU_BIN  the tansu executable (default ~/.cache/vigil/tansu/bin/tansu)
#   BENCH_SKIP_BUILD=1 use target/dist/vigil-agent as it is
#   BENCH_RESULTS    also copy the JSON lines of the results to this file
#   BENCH_ONLY       run only the cases whose name matches this regex, e.g.
#                    '1024-kafka-lz4' or 'rsyslog' (names: SIZE-OUTPUT, rsyslog-SIZE,
#                    json-300-OUTPUT, access-200-OUTPUT)
#   BENCH_AGENT_YAML extra top-level lines of the agent configuration, e.g.
#                    'log_batch: {max_bytes: 262144, max_line_bytes: 131072}'
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPER="$ROOT/bench/logbench.py"
MIB=${BENCH_MIB:-256}
TANSU=${VIGIL_TANSU_BIN:-$HOME/.cache/vigil/tansu/bin/tansu}

NAME=vigil-bench
# shellcheck source=bench/scratch.sh
source "$ROOT/bench/scratch.sh"

log() { printf '[bench] %s\n' "$*" >&2; }

# --- build and tools --------------------------------------------------------
dist_agent "${BENCH_SKIP_BUILD:-0}"
coverage=$(link_order_coverage "$AGENT")
log "$coverage"
if ! command -v rsyslogd >/dev/null; then
    log "installing rsyslog"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog >/dev/null
fi
RSYSLOGD=$(command -v rsyslogd)

# --- machine ----------------------------------------------------------------
python3 - "$WORK/machine.json" "$MIB" <<'EOF'
import json, os, platform, sys, time
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
ram = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
json.dump({"cpu": cpu, "cores": os.cpu_count(), "ram": f"{ram / 1024 / 1024:.1f} GiB",
           "kernel": platform.release(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "sizes": f"{sys.argv[2]} MiB per file"}, open(sys.argv[1], "w"))
EOF

# --- test files -------------------------------------------------------------
declare -A LINES
for size in 100 1024; do
    log "generating $MIB MiB of $size-byte lines"
    LINES[$size]=$(python3 "$HELPER" generate "$WORK/lines-$size.log" "$size" $((MIB * 1024 * 1024)))
done
# Parsed cases: FORMAT-SIZE, the file and the agent's `parsers`.
declare -A PARSERS=(
    [json-300]='[{json: {}}, {timestamp: {field: time, layouts: [rfc3339]}}]'
    [access-200]='{preset: nginx_access}'
)

# --- broker -----------------------------------------------------------------
start_tansu
log "tansu listens on 127.0.0.1:$BROKER_PORT"

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"

# run_vigil SIZE OUTPUT (kafka-lz4 | kafka-zstd | discard) [FORMAT-SIZE of PARSERS]
run_vigil() {
    local size=$1 output=$2 parsed=${3:-} run="$WORK/vigil-$1-$2${3:+-$3}" port args=()
    local file="$WORK/lines-$size.log" lines=${LINES[$size]:-} parsers="" format=plain
    if [[ -n $parsed ]]; then
        format=${parsed%-*}
        file="$WORK/lines-$parsed.log"
        parsers=", parsers: ${PARSERS[$parsed]}"
        log "generating $MIB MiB of $size-byte $format lines"
        lines=$(python3 "$HELPER" generate "$file" "$size" $((MIB * 1024 * 1024)) "$format")
    fi
    mkdir -p "$run/data" "$run/logs"
    port=$(free_port)
    local compression=${output#kafka-}
    cat >"$run/agent.yaml" <<EOF
resource: {id: bench, host_name: bench}
kafka:
  brokers: "127.0.0.1:$BROKER_PORT"
  topic_prefix: "bench-$size-${output}${parsed:+-$parsed}"
  producer_properties: {compression.type: "$compression"}
data_dir: "$run/data"
http: {listen: "127.0.0.1:$port"}
logs:
  - {path: "$run/logs/app.log", dataset: bench$parsers}
host_metrics: {enabled: false}
${BENCH_AGENT_YAML:-}
EOF
    if [[ $output == discard ]]; then
        args=(--output discard)
    else
        # Memory storage did not create topics on first produce here; create them.
        (cd "$WORK/tansu" && RUST_LOG=warn NO_COLOR=1 "$TANSU" topic create \
            --broker "tcp://127.0.0.1:$BROKER_PORT" --partitions 1 \
            "bench-$size-${output}${parsed:+-$parsed}.logs.raw") >>"$WORK/tansu-cli.log" 2>&1
    fi
    VIGIL_LOG=warn "$AGENT" --config "$run/agent.yaml" "${args[@]+"${args[@]}"}" \
        >"$run/agent.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    python3 "$HELPER" wait-http "http://127.0.0.1:$port/ready" 30
    log "vigil $size B $format lines, $output"
    python3 "$HELPER" measure --pid "$pid" --source "$file" \
        --target "$run/logs/app.log" --lines "$lines" \
        --metrics-url "http://127.0.0.1:$port/metrics" --timeout 120 \
        --shipper vigil --line-bytes "$size" --output "$output" --format "$format" \
        | tee -a "$RESULTS" >&2
    if [[ -n $parsed ]] && python3 "$HELPER" metric "http://127.0.0.1:$port/metrics" \
        vigil_agent_log_parse_failures_total; then
        log "warning: some $format lines failed to parse"
    fi
    stop "$pid"
    rm -rf "$run/logs"
    [[ -z $parsed ]] || rm -f "$file"
}

# run_rsyslog SIZE: imfile -> omfile, the lines as they are.
run_rsyslog() {
    local size=$1 run="$WORK/rsyslog-$1"
    mkdir -p "$run/work" "$run/logs"
    cat >"$run/rsyslog.conf" <<EOF
global(workDirectory="$run/work" maxMessageSize="64k")
module(load="imfile" mode="inotify")
module(load="builtin:omfile")
template(name="line" type="string" string="%msg%\n")
input(type="imfile" file="$run/logs/app.log" tag="bench" ruleset="bench" freshStartTail="off")
ruleset(name="bench") {
    action(type="omfile" file="$run/out.log" template="line" ioBufferSize="256k")
}
EOF
    "$RSYSLOGD" -N1 -f "$run/rsyslog.conf" >"$run/check.log" 2>&1 \
        || { cat "$run/check.log" >&2; return 1; }
    "$RSYSLOGD" -n -f "$run/rsyslog.conf" -i "$run/rsyslogd.pid" >"$run/rsyslog.log" 2>&1 &
    local pid=$! deadline=$((SECONDS + 30))
    PIDS+=("$pid")
    until [[ -s "$run/rsyslogd.pid" ]]; do
        if ((SECONDS >= deadline)) || ! kill -0 "$pid" 2>/dev/null; then
            log "rsyslogd did not start"
            cat "$run/rsyslog.log" >&2
            return 1
        fi
        sleep 0.05
    done
    log "rsyslog $size B lines, imfile -> omfile"
    python3 "$HELPER" measure --pid "$pid" --source "$WORK/lines-$size.log" \
        --target "$run/logs/app.log" --lines "${LINES[$size]}" \
        --output-file "$run/out.log" --timeout 120 \
        --shipper rsyslog --line-bytes "$size" --output omfile | tee -a "$RESULTS" >&2
    if ! cmp -s "$WORK/lines-$size.log" "$run/out.log"; then
        log "warning: rsyslog's output differs from its input"
    fi
    stop "$pid"
    rm -rf "$run/logs" "$run/out.log"
}

selected() { [[ $1 =~ ${BENCH_ONLY:-.} ]]; }
for size in 100 1024; do
    for output in kafka-lz4 kafka-zstd discard; do
        if selected "$size-$output"; then run_vigil "$size" "$output"; fi
    done
    if selected "rsyslog-$size"; then run_rsyslog "$size"; fi
done
for parsed in json-300 access-200; do
    if selected "$parsed-kafka-lz4"; then run_vigil "${parsed#*-}" kafka-lz4 "$parsed"; fi
done
stop "$TANSU_PID"

echo
python3 "$HELPER" report "$RESULTS" "$WORK/machine.json"
if [[ -n "${BENCH_RESULTS:-}" ]]; then
    cp "$RESULTS" "$BENCH_RESULTS"
fi
