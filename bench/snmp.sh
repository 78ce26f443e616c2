#!/usr/bin/env bash
# SNMP polling benchmark: vigil-agent and Debian's prometheus-snmp-exporter poll the
# same OIDs (sysUpTime, sysName and 13 ifTable/ifXTable columns of 16 interfaces:
# 210 values per device) from the same simulated devices (snmpsim), one after the
# other; reports CPU seconds per 1,000 OIDs of each and their ratio.
#
#   bash bench/snmp.sh            # 500 devices, 30 s interval, 90 s measured each
#   DEVICES=1000 bash bench/snmp.sh
set -euo pipefail

DEVICES=${DEVICES:-500}
INTERVAL=${INTERVAL:-30}
DURATION=${DURATION:-90}
INTERFACES=16
BASE_PORT=${BASE_PORT:-21000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=vigil-snmp-bench
# shellcheck source=bench/scratch.sh
source "$ROOT/bench/scratch.sh"
# snmpsimd drops to user nobody and reads its data below the scratch directory.
chmod 755 "$WORK"
AGENT_PORT=$(free_port)
EXPORTER_PORT=$(free_port)

need=()
command -v snmpsimd >/dev/null || need+=(snmpsim)
command -v prometheus-snmp-exporter >/dev/null || need+=(prometheus-snmp-exporter)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    echo "installing ${need[*]}" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
bash "$ROOT/scripts/install-build-deps.sh" >&2
(cd "$ROOT" && cargo build --profile dist -q -p vigil-agent)
AGENT="$ROOT/target/dist/vigil-agent"

# The simulated devices: one snmpsim process per 250 endpoints, all serving the
# same record under community `public`.
mkdir -p "$WORK/data" "$WORK/cache"
python3 "$ROOT/bench/snmp/make_device.py" "$INTERFACES" > "$WORK/data/public.snmprec"
chmod -R a+rwX "$WORK/data" "$WORK/cache"
OIDS_PER_POLL=$((2 + 13 * INTERFACES))
endpoint_args=()
for ((i = 0; i < DEVICES; i++)); do
    endpoint_args+=("--agent-udpv4-endpoint=127.0.0.1:$((BASE_PORT + i))")
    if (((i + 1) % 250 == 0 || i + 1 == DEVICES)); then
        snmpsimd --data-dir="$WORK/data" --cache-dir="$WORK/cache" --process-user=nobody \
            --process-group=nogroup "${endpoint_args[@]}" >"$WORK/snmpsim-$i.log" 2>&1 &
        PIDS+=($!)
        endpoint_args=()
    fi
done
for ((try = 0; try < 300; try++)); do
    if snmpget -v2c -c public -t 1 -r 0 -On "127.0.0.1:$((BASE_PORT + DEVICES - 1))" 1.3.6.1.2.1.1.3.0 >/dev/null 2>&1; then
        break
    fi
    sleep 1
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)

# Vigil: every device a target, batches encoded and discarded.
{
    echo "resource: {id: bench, host_name: bench}"
    echo "kafka: {brokers: '127.0.0.1:1'}"
    echo "data_dir: $WORK/agent"
    echo "http: {listen: '127.0.0.1:$AGENT_PORT'}"
    echo "host_metrics: {enabled: false}"
    echo "snmp:"
    echo "  targets:"
    for ((i = 0; i < DEVICES; i++)); do
        echo "    - {name: dev$i, address: '127.0.0.1:$((BASE_PORT + i))', community: public, interval: ${INTERVAL}s, timeout: 5s, retries: 1, metric_sets: [if]}"
    done
} >"$WORK/agent.yaml"
VIGIL_LOG=warn "$AGENT" --config "$WORK/agent.yaml" --output discard 2>"$WORK/agent.log" &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
wait_for_url "http://127.0.0.1:$AGENT_PORT/ready" vigil-agent
polls() { curl -s http://127.0.0.1:$AGENT_PORT/metrics | awk '/^vigil_agent_snmp_polls_total\{.*outcome="success"/ {sum += $2} END {print sum + 0}'; }
sleep "$INTERVAL" # the first round: sessions and schedules settle
vigil_polls_before=$(polls)
vigil_cpu_before=$(cpu_ticks "$AGENT_PID")
sleep "$DURATION"
vigil_cpu=$(($(cpu_ticks "$AGENT_PID") - vigil_cpu_before))
vigil_polls=$(($(polls) - vigil_polls_before))
vigil_failures=$(curl -s http://127.0.0.1:$AGENT_PORT/metrics | awk '/^vigil_agent_snmp_poll_errors_total/ {sum += $2} END {print sum + 0}')
vigil_rss=$(awk '/VmHWM/ {print $2}' "/proc/$AGENT_PID/status")
stop "$AGENT_PID"

# prometheus-snmp-exporter: scraped once per device and interval, 64 at a time,
# as Prometheus would.
python3 "$ROOT/bench/snmp/exporter_module.py" 25 >"$WORK/snmp.yml"
prometheus-snmp-exporter --config.file="$WORK/snmp.yml" --web.listen-address=127.0.0.1:$EXPORTER_PORT \
    --log.level=warn 2>"$WORK/exporter.log" &
EXPORTER_PID=$!
PIDS+=("$EXPORTER_PID")
wait_for_url "http://127.0.0.1:$EXPORTER_PORT/metrics" prometheus-snmp-exporter
scrape_round() {
    seq 0 $((DEVICES - 1)) | xargs -P 64 -I{} sh -c \
        "curl -s 'http://127.0.0.1:$EXPORTER_PORT/snmp?module=vigil&target=127.0.0.1:'\$(($BASE_PORT + {})) | grep -q '^ifHCInOctets' && echo ok" |
        wc -l
}
scrape_round >/dev/null
exporter_polls=0
exporter_cpu_before=$(cpu_ticks "$EXPORTER_PID")
rounds=$((DURATION / INTERVAL))
for ((round = 0; round < rounds; round++)); do
    started=$(date +%s)
    exporter_polls=$((exporter_polls + $(scrape_round)))
    left=$((INTERVAL - ($(date +%s) - started)))
    if ((left > 0)); then sleep "$left"; fi
done
exporter_cpu=$(($(cpu_ticks "$EXPORTER_PID") - exporter_cpu_before))
exporter_rss=$(awk '/VmHWM/ {print $2}' "/proc/$EXPORTER_PID/status")

python3 - "$TICKS" "$OIDS_PER_POLL" "$vigil_cpu" "$vigil_polls" "$exporter_cpu" "$exporter_polls" \
    "$vigil_rss" "$exporter_rss" "$vigil_failures" "$DEVICES" "$INTERVAL" "$DURATION" <<'PY'
import sys
ticks, per_poll, v_cpu, v_polls, e_cpu, e_polls, v_rss, e_rss, v_fail, devices, interval, duration = map(int, sys.argv[1:])
def per_thousand(cpu, polls):
    return cpu / ticks / (polls * per_poll / 1000) if polls else float("nan")
v = per_thousand(v_cpu, v_polls)
e = per_thousand(e_cpu, e_polls)
print(f"{devices} simulated devices, {per_poll} OIDs each, every {interval}s, {duration}s measured")
print(f"{'poller':<26}{'polls':>8}{'OIDs':>10}{'CPU s':>8}{'CPU s/1k OIDs':>15}{'peak RSS MiB':>14}")
print(f"{'vigil-agent':<26}{v_polls:>8}{v_polls * per_poll:>10}{v_cpu / ticks:>8.2f}{v:>15.4f}{v_rss / 1024:>14.1f}")
print(f"{'prometheus-snmp-exporter':<26}{e_polls:>8}{e_polls * per_poll:>10}{e_cpu / ticks:>8.2f}{e:>15.4f}{e_rss / 1024:>14.1f}")
print(f"vigil / snmp_exporter CPU per OID: {v / e:.2f}   (vigil failed polls: {v_fail})")
PY
