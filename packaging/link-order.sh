#!/usr/bin/env bash
# Writes agent/link-order.txt, the functions vigil-agent runs when it starts, tails a
# file, ships to Kafka, collects host and container metrics, answers HTTP and stops:
#
#   bash packaging/link-order.sh
#
# It builds the agent with the `dist` profile, starts a private tansu broker, and runs
# the agent twice under valgrind's callgrind (once shipping to the broker, once with
# `--output discard`) through that work. Every function of the binary that callgrind
# saw run goes into the list, sorted by name. agent/build.rs hands the list to the
# linker, which places those functions side by side at the start of the code. The
# kernel maps a program's code in blocks of up to 64 KiB around each page it runs, so
# the few functions a resting agent uses, when spread over the whole binary, keep most
# of it resident; packed together they keep a fraction of it (see BENCHMARKS.md).
#
# The names carry the hashes of this toolchain and these dependency versions; run this
# again after updating either. bench/logs.sh and bench/host_metrics.sh print how many
# of the listed functions the binary they measure still has.
#
# Environment:
#   LINK_ORDER_SKIP_BUILD=1  use target/dist/vigil-agent as it is
#   VIGIL_TANSU_BIN          the tansu executable (default ~/.cache/vigil/tansu/bin/tansu)
#   BENCH_WORK_DIR           keep the scratch directory (callgrind outputs, agent logs)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TANSU=${VIGIL_TANSU_BIN:-$HOME/.cache/vigil/tansu/bin/tansu}
ORDER="$ROOT/agent/link-order.txt"
LINES=5000

NAME=vigil-link-order
# shellcheck source=bench/scratch.sh
source "$ROOT/bench/scratch.sh"

log() { printf '[link-order] %s\n' "$*" >&2; }

dist_agent "${LINK_ORDER_SKIP_BUILD:-0}"
if ! command -v valgrind >/dev/null; then
    log "installing valgrind"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi

# Waits up to $2 seconds until the sum of the agent's metrics matching $1 (a regex
# over /metrics lines) reaches $3.
wait_metric() {
    local pattern=$1 limit=$2 want=$3 deadline=$((SECONDS + $2)) exposition value
    while ((SECONDS < deadline)); do
        if exposition=$(curl -fs "http://127.0.0.1:$HTTP_PORT/metrics"); then
            value=$(awk -v p="$pattern" '$0 ~ p { sum += $NF } END { printf "%d", sum }' <<<"$exposition")
            if ((value >= want)); then
                return 0
            fi
        fi
        sleep 0.5
    done
    log "$pattern did not reach $want within ${limit}s; see $WORK"
    exit 1
}

start_tansu
for topic in order.logs.raw order.metrics.raw; do
    (cd "$WORK/tansu" && RUST_LOG=warn NO_COLOR=1 "$TANSU" topic create \
        --broker "tcp://127.0.0.1:$BROKER_PORT" --partitions 1 "$topic") >>"$WORK/tansu-cli.log" 2>&1
done

# record OUTPUT (kafka | discard): one agent run under callgrind.
record() {
    local output=$1 run="$WORK/$1" args=()
    mkdir -p "$run/data" "$run/logs"
    HTTP_PORT=$(free_port)
    cat >"$run/agent.yaml" <<EOF
resource: {id: link-order, host_name: link-order}
kafka:
  brokers: "127.0.0.1:$BROKER_PORT"
  topic_prefix: order
  producer_properties: {compression.type: lz4}
data_dir: "$run/data"
http: {listen: "127.0.0.1:$HTTP_PORT"}
logs:
  - {path: "$run/logs/*.log", dataset: order}
host_metrics: {enabled: true, interval: 2s}
EOF
    [[ $output == discard ]] && args=(--output discard)
    log "recording the agent with output $output"
    VIGIL_LOG=info valgrind --tool=callgrind --demangle=no \
        --callgrind-out-file="$run/callgrind.out" \
        "$AGENT" --config "$run/agent.yaml" "${args[@]+"${args[@]}"}" >"$run/agent.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    # Ready once the tailer has looked at its paths: a file written before that would
    # count as present at the first start and ship from its end. Under valgrind the
    # agent starts in seconds rather than milliseconds.
    local deadline=$((SECONDS + 120))
    until curl -fs -o /dev/null "http://127.0.0.1:$HTTP_PORT/ready"; do
        ((SECONDS < deadline)) || { log "the agent was not ready within 120s; see $WORK"; exit 1; }
        sleep 0.5
    done
    seq -f "%g the quick brown fox jumps over the lazy dog" 1 "$LINES" >"$run/logs/app.log"
    wait_metric '^vigil_agent_log_lines_sent_total' 120 "$LINES"
    wait_metric '^vigil_agent_batches_published_total\{topic="[a-z.]*metrics\.raw"\}' 60 4
    curl -fs -o /dev/null "http://127.0.0.1:$HTTP_PORT/health"
    stop "$pid"
}

record kafka
record discard

python3 - "$AGENT" "$ORDER" "$WORK"/*/callgrind.out <<'EOF'
import re, subprocess, sys
binary, order, outputs = sys.argv[1], sys.argv[2], sys.argv[3:]
ran = set()
for path in outputs:
    for line in open(path, errors="replace"):
        match = re.match(r"^c?fn=\(\d+\) (\S+)$", line.rstrip("\n"))
        if match:
            ran.add(match.group(1))
functions = set()
for line in subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    fields = line.split()
    if len(fields) == 3 and fields[1] in "tTwW" and fields[2] in ran:
        functions.add(fields[2])
with open(order, "w") as out:
    out.write("# Functions vigil-agent runs at start, at rest and shipping; written by\n"
              "# packaging/link-order.sh, read by agent/build.rs. Regenerate after a\n"
              "# toolchain or dependency update.\n")
    out.writelines(name + "\n" for name in sorted(functions))
print(f"[link-order] {len(functions)} functions written to {order}", file=sys.stderr)
EOF
