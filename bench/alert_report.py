#!/usr/bin/env python3
"""Report of bench/alert.sh: Vigil's rules engine against its targets, and
Prometheus' evaluation of the same rules beside Vigil's.

    alert_report.py WORK

Reads, from the scratch directory WORK: the criterion results (criterion/),
`rounds.json`, `latency.json` and `prometheus.jsonl`.
"""

import json
import os
import statistics
import sys

SAMPLES_TARGET = 1_000_000
LINES_TARGET = 500_000
LATENCY_TARGET = 1.0
BENCHMARKS = [
    ("metrics_decode_evaluate", "metrics: decode + evaluate", "samples/s", SAMPLES_TARGET),
    ("logs_decode_evaluate", "logs: decode + evaluate", "lines/s", LINES_TARGET),
]


def criterion(work, name):
    base = os.path.join(work, "criterion", "alert", name, "new")
    with open(os.path.join(base, "estimates.json")) as file:
        mean = json.load(file)["mean"]
    with open(os.path.join(base, "benchmark.json")) as file:
        elements = json.load(file)["throughput"]["Elements"]
    return elements, mean


def verdict(met):
    return "met" if met else "MISSED"


def main():
    work = sys.argv[1]
    print("Throughput of one core (CPU time of the benchmarking thread):")
    print()
    print("| benchmark | per iteration | per core | 95 % interval | target | ratio |")
    print("|---|---|---|---|---|---|")
    for name, title, unit, target in BENCHMARKS:
        elements, mean = criterion(work, name)
        rate = elements / (mean["point_estimate"] / 1e9)
        low = elements / (mean["confidence_interval"]["upper_bound"] / 1e9)
        high = elements / (mean["confidence_interval"]["lower_bound"] / 1e9)
        print(f"| {title} | {elements:,} in {mean['point_estimate'] / 1e6:.1f} ms "
              f"| {rate:,.0f} {unit} | {low:,.0f} – {high:,.0f} | {target:,} | "
              f"{rate / target:.2f} {verdict(rate >= target)} |")
    print()

    with open(os.path.join(work, "rounds.json")) as file:
        rounds = json.load(file)
    print(f"Evaluation rounds of {rounds['rules']:,} metric rules over {rounds['series']:,} "
          f"series with full 5-minute windows ({rounds['rounds']} rounds): "
          f"median {rounds['round_cpu_seconds_median'] * 1e3:.1f} ms of CPU "
          f"(min {rounds['round_cpu_seconds_min'] * 1e3:.1f}, "
          f"max {rounds['round_cpu_seconds_max'] * 1e3:.1f}); "
          f"{rounds['alerts_active']} alerts firing; between rounds "
          f"{rounds['samples_per_cpu_second_ingest']:,.0f} samples/s decoded and observed, "
          f"{rounds['samples_per_cpu_second_with_rounds']:,.0f} with the rounds")
    print()

    with open(os.path.join(work, "latency.json")) as file:
        latency = json.load(file)
    print(f"Latency through the alert stage ({latency['seconds']} s at the fleet's rate after "
          f"{latency['history_polls']} polls of history, taken in {latency['history_seconds']:.1f} s; "
          f"publisher at most {latency['publisher_most_behind_seconds'] * 1e3:.0f} ms behind):")
    print()
    print("| probe | alerts | p50 | p99 | max | target p99 |")
    print("|---|---|---|---|---|---|")
    titles = {
        "LoadSpike": "metric rule (`value > 1000`, 1 s group)",
        "ProbeLine": "log rule (`type: any`)",
    }
    for probe, title in titles.items():
        figures = latency[probe]
        if not figures["arrived"]:
            print(f"| {title} | none of {figures['missing']} arrived | | | | |")
            continue
        missing = f" ({figures['missing']} missing)" if figures["missing"] else ""
        print(f"| {title} | {figures['arrived']}{missing} | {figures['p50'] * 1e3:.0f} ms "
              f"| {figures['p99'] * 1e3:.0f} ms | {figures['max'] * 1e3:.0f} ms "
              f"| {LATENCY_TARGET * 1e3:.0f} ms: {verdict(figures['p99'] < LATENCY_TARGET)} |")
    print()

    path = os.path.join(work, "prometheus.jsonl")
    reports = []
    version = ""
    if os.path.exists(path):
        with open(path) as file:
            for line in file:
                record = json.loads(line)
                if record["kind"] == "prometheus":
                    reports.append(record)
                else:
                    version = record["version"]
    if not reports:
        print("Prometheus: not run")
        return
    seconds = [r["round_seconds"] for r in reports]
    prometheus = statistics.median(seconds)
    vigil = rounds["round_cpu_seconds_median"]
    print(f"{version}: {reports[-1]['rules']} alerting rules in {reports[-1]['groups']} groups; "
          f"one round (sum of the groups' evaluationTime) over {len(seconds)} reads: "
          f"median {prometheus * 1e3:.1f} ms (min {min(seconds) * 1e3:.1f}, "
          f"max {max(seconds) * 1e3:.1f}); {reports[-1]['alerts_active']} alerts firing")
    print(f"Vigil, the same rules over the same series, one round: {vigil * 1e3:.1f} ms of CPU")
    print(f"Prometheus / Vigil: {prometheus / vigil:.1f}x")


if __name__ == "__main__":
    main()
