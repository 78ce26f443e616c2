#!/usr/bin/env bash
# Host-metrics footprint of vigil-agent next to Debian's prometheus-node-exporter,
# one command:
#
#   bash bench/host_metrics.sh
#
# Builds vigil-agent with the `dist` profile (what packaging ships) and starts it
# with `--output discard`, host and container metrics every 10 s and nothing else
# (no log files, no SNMP targets).
# Starts prometheus-node-exporter (installed with apt-get if missing, default
# collectors) on a free port and scrapes it every 10 s. Both run side by side;
# after a warm-up, for BENCH_SECONDS the CPU time (utime+stime of all threads,
# from /proc/<pid>/stat) and the resident memory (VmRSS every 5 s, VmHWM) of each
# process are recorded. Printed: average RSS, peak RSS, CPU as % of one core, and
# Vigil's figures as a ratio of node-exporter's; then the agent's memory map
# summed by kind (heap, thread stacks, binary) to show where its RSS goes.
#
# Environment:
#   BENCH_SECONDS      measured time in seconds (default 180)
#   BENCH_WARMUP       seconds before measuring (default 20)
#   BENCH_SKIP_BUILD=1 use target/dist/vigil-agent as it is
#   BENCH_WORK_DIR     scratch directory (default: a new one under /tmp, removed at exit)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_MEASURED=${BENCH_SECONDS:-180}
WARMUP=${BENCH_WARMUP:-20}
NODE_EXPORTER=/usr/bin/prometheus-node-exporter

NAME=vigil-bench-host
# shellcheck source=bench/scratch.sh
source "$ROOT/bench/scratch.sh"

if [[ ! -x $NODE_EXPORTER ]]; then
    echo "installing prometheus-node-exporter"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        prometheus-node-exporter >"$WORK/apt.log" 2>&1
fi
dist_agent "${BENCH_SKIP_BUILD:-0}"
link_order_coverage "$AGENT"

AGENT_PORT=$(free_port)
EXPORTER_PORT=$(free_port)
cat >"$WORK/agent.yaml" <<EOF
resource: {id: bench-host, host_name: bench-host}
# Required by the standalone agent; --output discard never connects to it.
kafka: {brokers: "127.0.0.1:9"}
data_dir: $WORK/agent-data
http: {listen: "127.0.0.1:$AGENT_PORT"}
host_metrics: {enabled: true, interval: 10s}
container_metrics: {enabled: true, interval: 10s}
EOF

"$AGENT" --config "$WORK/agent.yaml" --output discard 2>"$WORK/agent.log" &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
"$NODE_EXPORTER" --web.listen-address="127.0.0.1:$EXPORTER_PORT" 2>"$WORK/node-exporter.log" &
EXPORTER_PID=$!
PIDS+=("$EXPORTER_PID")
wait_for_url "http://127.0.0.1:$AGENT_PORT/ready" vigil-agent
wait_for_url "http://127.0.0.1:$EXPORTER_PORT/metrics" prometheus-node-exporter

(
    while sleep 10; do
        curl -fs -o /dev/null "http://127.0.0.1:$EXPORTER_PORT/metrics" || true
    done
) &
PIDS+=("$!")

echo "warming up for ${WARMUP}s, then measuring for ${SECONDS_MEASURED}s"
sleep "$WARMUP"

python3 - "$AGENT_PID" "$EXPORTER_PID" "$SECONDS_MEASURED" "$AGENT_PORT" <<'PYEOF'
import os
import sys
import time
import urllib.request

agent_pid, exporter_pid, duration, agent_port = (int(arg) for arg in sys.argv[1:])
ticks_per_second = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


processes = {"vigil-agent": agent_pid, "node-exporter": exporter_pid}
start_ticks = {name: cpu_ticks(pid) for name, pid in processes.items()}
rss = {name: [] for name in processes}
started = time.monotonic()
while time.monotonic() - started < duration:
    for name, pid in processes.items():
        rss[name].append(status_kib(pid, "VmRSS"))
    time.sleep(5)
elapsed = time.monotonic() - started

results = {}
for name, pid in processes.items():
    cpu_seconds = (cpu_ticks(pid) - start_ticks[name]) / ticks_per_second
    results[name] = {
        "rss": sum(rss[name]) / len(rss[name]) / 1024,
        "peak": status_kib(pid, "VmHWM") / 1024,
        "cpu": 100 * cpu_seconds / elapsed,
        "cpu_seconds": cpu_seconds,
        "threads": threads(pid),
    }

print()
print(f"measured {elapsed:.0f}s, {ticks_per_second} clock ticks per second")
print("| process | average RSS | peak RSS | CPU (% of one core) | CPU seconds | threads |")
print("|---|---|---|---|---|---|")
for name, figures in results.items():
    print(
        f"| {name} | {figures['rss']:.1f} MiB | {figures['peak']:.1f} MiB "
        f"| {figures['cpu']:.3f} % | {figures['cpu_seconds']:.2f} | {figures['threads']} |"
    )
vigil, exporter = results["vigil-agent"], results["node-exporter"]
cpu_ratio = (
    f"{vigil['cpu'] / exporter['cpu']:.2f}" if exporter["cpu"] > 0 else "n/a"
)
print()
print(
    f"vigil-agent / node-exporter: RSS {vigil['rss'] / exporter['rss']:.2f}, "
    f"CPU {cpu_ratio}"
)
for what, value, target, unit in [
    ("RSS", vigil["rss"], 10.0, "MiB"),
    ("CPU", vigil["cpu"], 0.1, "% of a core"),
]:
    verdict = "met" if value <= target else "MISSED"
    print(f"target {what} <= {target} {unit}: {value:.3f} -> {verdict}")

with urllib.request.urlopen(f"http://127.0.0.1:{agent_port}/metrics") as response:
    exposed = response.read().decode()
errors = [
    line
    for line in exposed.splitlines()
    if line.startswith("vigil_agent_metric_collection_errors_total")
]
print("collection errors:", ", ".join(errors) if errors else "none")

# Where the agent's resident memory is: its mappings summed by kind.
kinds = {}
name = None
with open(f"/proc/{agent_pid}/smaps") as smaps:
    for line in smaps:
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            path = fields[5] if len(fields) >= 6 else ""
            if path.endswith("vigil-agent"):
                name = "binary (code and data)"
            elif path == "[heap]":
                name = "heap (brk)"
            elif path.startswith("["):
                name = path
            elif path:
                name = "shared libraries"
            else:
                name = "anonymous (malloc arenas, thread stacks)"
        elif fields[0] == "Rss:":
            kinds[name] = kinds.get(name, 0) + int(fields[1])
print()
print("vigil-agent RSS by mapping kind:")
for kind, kib in sorted(kinds.items(), key=lambda item: -item[1]):
    if kib:
        print(f"  {kib / 1024:6.1f} MiB  {kind}")
PYEOF

echo
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
echo "node-exporter: $("$NODE_EXPORTER" --version 2>&1 | head -1)"
