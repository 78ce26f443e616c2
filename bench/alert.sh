#!/usr/bin/env bash
# The alert stage's rules engine against its targets, and Prometheus evaluating the
# same rules over the same series, one command:
#
#   bash bench/alert.sh
#
# Builds aggregator/benches/alert.rs with the `dist` profile (fat LTO, what
# packaging ships) and runs, on a fleet of 1,000 hosts x 100 series with 1,000
# metric rules and 100 regex log rules (see the benchmark's module docs):
#
# 1. the criterion benchmarks: samples/s and lines/s of one core (CPU time of the
#    benchmarking thread), decoding and evaluation rounds included;
# 2. `rounds`: the CPU time of one evaluation round of the 1,000 metric rules over
#    full 5-minute windows;
# 3. `latency`: the real alert stage on the in-process bus at the fleet's rate,
#    with a webhook receiver; p50/p99 from publishing a batch to the POST of the
#    alert it raises;
# 4. Debian's prometheus (installed with apt-get if missing, its service not
#    started), run in the foreground of this script with its own config and a
#    scratch data folder, scraping the same 100,000 series from a static
#    exposition (bench/alert_exposition.py) and evaluating the same 1,000 rules
#    as alerting rules; its rule groups' `evaluationTime` (/api/v1/rules) once the
#    5-minute windows are full, summed over the groups of one round.
#
# Then bench/alert_report.py prints the figures, the targets and the ratios.
# Prometheus runs alone, after Vigil's measurements, so they do not share the cores.
#
# Environment:
#   BENCH_SKIP_BUILD=1        use the benchmark executable built last
#   BENCH_ARGS                extra criterion arguments, e.g. '--measurement-time 60'
#   BENCH_ROUNDS              evaluation rounds timed by `rounds` (default 12)
#   BENCH_LATENCY_SECONDS     length of the latency run (default 60)
#   BENCH_PROMETHEUS_SECONDS  scraping before Prometheus' rounds are read (default
#                             330: the 5-minute windows are full); 0 skips Prometheus
#   BENCH_WORK_DIR            scratch directory (default: a new one under /tmp,
#                             removed at exit; see bench/scratch.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ROUNDS=${BENCH_ROUNDS:-12}
LATENCY_SECONDS=${BENCH_LATENCY_SECONDS:-60}
PROMETHEUS_SECONDS=${BENCH_PROMETHEUS_SECONDS:-330}
# Rounds of Prometheus' groups read once the windows are full.
PROMETHEUS_ROUNDS=4

NAME=vigil-bench-alert
# shellcheck source=bench/scratch.sh
source "$ROOT/bench/scratch.sh"

log() { printf '[bench] %s\n' "$*" >&2; }

# --- build ------------------------------------------------------------------
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "building the alert benchmark (dist profile)"
    (cd "$ROOT" && cargo bench --profile dist -p vigil-aggregator --bench alert --no-run \
        --message-format json-render-diagnostics) >"$WORK/build.jsonl"
    BENCH=$(python3 - "$WORK/build.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "alert" \
            and "bench" in message["target"]["kind"] and message.get("executable"):
        print(message["executable"])
EOF
)
else
    BENCH=$(ls -t "$CARGO_TARGET"/dist/deps/alert-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
fi
[[ -n "$BENCH" && -x "$BENCH" ]] || { log "the benchmark executable is missing"; exit 1; }
# A private copy: the shared target directory may be rebuilt while this runs.
cp "$BENCH" "$WORK/alert-bench"
BENCH="$WORK/alert-bench"

# --- Vigil --------------------------------------------------------------------
log "throughput per core (criterion, about 3 minutes)"
# shellcheck disable=SC2086
CRITERION_HOME="$WORK/criterion" "$BENCH" --bench ${BENCH_ARGS:-} 2>&1 | tee "$WORK/bench.log" >&2

log "CPU time of $ROUNDS evaluation rounds of the 1,000 metric rules"
"$BENCH" rounds "$ROUNDS" | tee "$WORK/rounds.json" >&2

log "ingest-to-notification latency through the alert stage (${LATENCY_SECONDS}s after 5 minutes of history)"
"$BENCH" latency "$LATENCY_SECONDS" | tee "$WORK/latency.json" >&2

# --- Prometheus ------------------------------------------------------------------
: >"$WORK/prometheus.jsonl"
if ((PROMETHEUS_SECONDS > 0)); then
    if ! command -v prometheus >/dev/null; then
        log "installing Debian's prometheus (its service is not started)"
        # invoke-rc.d asks policy-rc.d; 101 means "do not start services".
        POLICY=/usr/sbin/policy-rc.d
        CREATED_POLICY=0
        if [[ ! -e $POLICY ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$POLICY"
            chmod +x "$POLICY"
            CREATED_POLICY=1
        fi
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
        ((CREATED_POLICY == 0)) || rm -f "$POLICY"
    fi
    PROMETHEUS_VERSION=$(prometheus --version 2>&1 | head -1)
    log "$PROMETHEUS_VERSION"
    "$BENCH" export "$WORK/export"
    EXPOSITION_PORT=$(free_port)
    python3 "$ROOT/bench/alert_exposition.py" "$WORK/export/series.tsv" "$EXPOSITION_PORT" &
    PIDS+=($!)
    wait_for_url "http://127.0.0.1:$EXPOSITION_PORT/metrics" "the exposition server"
    cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 10s
  scrape_timeout: 10s
  evaluation_interval: 15s
rule_files: ["$WORK/export/rules.yml"]
scrape_configs:
  - job_name: fleet
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:$EXPOSITION_PORT"]
EOF
    PROMETHEUS_PORT=$(free_port)
    mkdir -p "$WORK/prometheus-data"
    prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus-data" \
        --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" >"$WORK/prometheus.log" 2>&1 &
    PIDS+=($!)
    wait_for_url "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" "prometheus"
    log "prometheus scrapes 100,000 series every 10 s for ${PROMETHEUS_SECONDS}s, then $PROMETHEUS_ROUNDS rounds are read"
    sleep "$PROMETHEUS_SECONDS"
    for _ in $(seq 1 "$PROMETHEUS_ROUNDS"); do
        curl -fs "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/rules?type=alert" | python3 -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
print(json.dumps({
    "kind": "prometheus",
    "groups": len(groups),
    "rules": sum(len(g["rules"]) for g in groups),
    "round_seconds": sum(g["evaluationTime"] for g in groups),
    "alerts_active": sum(len(r.get("alerts", [])) for g in groups for r in g["rules"]),
    "last_evaluations": sorted({g["lastEvaluation"][:19] for g in groups}),
}))' >>"$WORK/prometheus.jsonl"
        sleep 15
    done
    curl -fs "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query" \
        --data-urlencode 'query=count({job="fleet"})' >"$WORK/prometheus-series.json" || true
    echo "{\"kind\": \"prometheus_version\", \"version\": \"$PROMETHEUS_VERSION\"}" >>"$WORK/prometheus.jsonl"
fi

# --- report -----------------------------------------------------------------
echo
python3 "$ROOT/bench/alert_report.py" "$WORK"
echo
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r); $(date -u '+%Y-%m-%d %H:%M UTC'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
