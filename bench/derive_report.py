#!/usr/bin/env python3
"""Report of bench/derive.sh: the figures of the criterion benchmark, and where the
time of the full pass goes according to perf.

    derive_report.py figures CRITERION_HOME BENCH_LOG
    derive_report.py profile PERF_REPORT PERF_SCRIPT ROOT TOP

`figures` prints raw samples per second of one core for each pass, the ratio to
the target, and the CPU time of each step (decode, derive, freeing, encode,
closing windows) as the benchmark timed it within one pass. `profile` prints the top
symbols by self time (`perf report --no-children`), then, from the call chains
with inlined frames (`perf script --inline`), the inclusive time of Vigil's
functions and the source lines of Vigil's code where the time is spent: a sample
counts for the innermost frame in Vigil's sources, with everything it called
(allocation, hashing, copying), so that inlined code is found where it was written.
"""

import json
import os
import re
import sys
from collections import defaultdict

TARGET = 1_000_000
PASSES = [
    ("decode", "decode"),
    ("decode_derive_encode", "decode + derive + encode"),
]
# Source files whose frames count as Vigil's (base names, as perf prints them).
VIGIL_SOURCES = {
    "engine.rs": "aggregator/src/derive/engine.rs",
    "rates.rs": "aggregator/src/derive/rates.rs",
    "counter.rs": "aggregator/src/derive/counter.rs",
    "window.rs": "aggregator/src/derive/window.rs",
    "sketch.rs": "aggregator/src/derive/sketch.rs",
    "definitions.rs": "aggregator/src/derive/definitions.rs",
    "codec.rs": "proto/src/codec.rs",
    "labels.rs": "proto/src/labels.rs",
    "vigil.v1.rs": "proto/src/generated/vigil.v1.rs",
    "derive.rs": "aggregator/benches/derive.rs",
}
BENCH_SOURCE = "derive.rs"


def figures(home, log):
    results = {}
    for name, _ in PASSES:
        base = os.path.join(home, "derive", name, "new")
        with open(os.path.join(base, "estimates.json")) as file:
            mean = json.load(file)["mean"]
        with open(os.path.join(base, "benchmark.json")) as file:
            elements = json.load(file)["throughput"]["Elements"]
        results[name] = (elements, mean["point_estimate"], mean["confidence_interval"])
    steps = ""
    with open(log) as file:
        for line in file:
            if line.startswith(("corpus:", "one pass")):
                print(line.rstrip())
            elif line.startswith("steps of"):
                steps = line.rstrip()
    print()
    print("| pass | CPU time per pass (mean) | raw samples/s per core | 95 % interval | ratio to 1,000,000 |")
    print("|---|---|---|---|---|")
    for name, title in PASSES:
        elements, mean, interval = results[name]
        rate = elements / (mean / 1e9)
        low = elements / (interval["upper_bound"] / 1e9)
        high = elements / (interval["lower_bound"] / 1e9)
        print(f"| {title} | {mean / 1e9:.3f} s | {rate:,.0f} | {low:,.0f} – {high:,.0f} | {rate / TARGET:.2f} |")
    elements, full, _ = results["decode_derive_encode"]
    rate = elements / (full / 1e9)
    print()
    # Measured within one pass: differences between the passes above would mix in
    # their run-to-run spread.
    print(steps)
    verdict = "met" if rate >= TARGET else "MISSED"
    print(f"target >= {TARGET:,} raw samples/s per core (decode + derive + encode): {rate:,.0f} -> {verdict}")


def short(symbol):
    """A symbol without module paths: `Engine::apply`, `drop_in_place<MetricBatch>`."""
    symbol = re.sub(r"\b[a-z_][a-z0-9_]*::", "", symbol)
    return symbol if len(symbol) <= 90 else symbol[:87] + "..."


def samples(script):
    """(period, [(symbol, file, line)] innermost first) of every sample."""
    period, frames = None, []
    with open(script, errors="replace") as file:
        for line in file:
            if not line.strip():
                if period is not None:
                    yield period, frames
                period, frames = None, []
            elif re.fullmatch(r"\s*\d+\s*", line):
                period, frames = int(line), []
            elif line.startswith("\t"):
                parts = line.strip().split(None, 1)
                frames.append([parts[1] if len(parts) > 1 else "[unknown]", None, None])
            else:
                match = re.match(r"\s*([^\s:]+):(\d+)", line)
                if match and frames and frames[-1][1] is None:
                    frames[-1][1] = os.path.basename(match.group(1))
                    frames[-1][2] = int(match.group(2))
    if period is not None:
        yield period, frames


def message_of(root, number, cache={}):
    """The generated message type a line of vigil.v1.rs belongs to."""
    if "lines" not in cache:
        try:
            with open(os.path.join(root, VIGIL_SOURCES["vigil.v1.rs"])) as file:
                cache["lines"] = file.read().splitlines()
        except OSError:
            cache["lines"] = []
    lines = cache["lines"]
    if not 0 < number <= len(lines):
        return "?"
    step = 1 if "#[derive" in lines[number - 1] else -1
    index = number - 1
    while 0 <= index < len(lines):
        match = re.match(r"pub struct (\w+)", lines[index])
        if match:
            return match.group(1)
        index += step
    return "?"


def frame_name(root, symbol, name, number):
    function = short(symbol)
    if name == "vigil.v1.rs" and number:
        function = f"{function} [{message_of(root, number)}]"
    return function


def source_line(root, name, number):
    path = VIGIL_SOURCES.get(name)
    if path is None:
        return ""
    try:
        with open(os.path.join(root, path)) as file:
            for index, text in enumerate(file, 1):
                if index == number:
                    text = " ".join(text.split())
                    return text if len(text) <= 70 else text[:67] + "..."
    except OSError:
        pass
    return ""


def profile(report, script, root, top):
    print(f"top {top} symbols by self time (perf report --no-children):")
    shown = 0
    with open(report, errors="replace") as file:
        for line in file:
            # perf adds columns of `-` (no IPC figures from a software event).
            match = re.match(r"\s*([\d.]+)%\s+\[[.k]\]\s+(.*?)(?:\s+-)*\s*$", line)
            if match:
                symbol = match.group(2)
                symbol = symbol if len(symbol) <= 100 else symbol[:97] + "..."
                print(f"  {float(match.group(1)):5.1f} %  {symbol}")
                shown += 1
                if shown == top:
                    break

    total = 0
    inclusive = defaultdict(int)
    lines = defaultdict(int)
    for period, frames in samples(script):
        total += period
        seen = set()
        for symbol, name, number in frames:
            if name in VIGIL_SOURCES and name != BENCH_SOURCE:
                seen.add(frame_name(root, symbol, name, number))
        for function in seen:
            inclusive[function] += period
        for symbol, name, number in frames:
            if name in VIGIL_SOURCES:
                lines[(name, number, frame_name(root, symbol, name, number))] += period
                break
    if not total:
        return
    print()
    print(f"Vigil's functions by inclusive time (with what they call and inline), top {top}:")
    for function, period in sorted(inclusive.items(), key=lambda item: -item[1])[:top]:
        print(f"  {100 * period / total:5.1f} %  {function}")
    print()
    print(f"where in Vigil's sources (the innermost Vigil frame of each sample, with its callees), top {top}:")
    for (name, number, function), period in sorted(lines.items(), key=lambda item: -item[1])[:top]:
        text = source_line(root, name, number)
        print(f"  {100 * period / total:5.1f} %  {name}:{number} {function}: {text}")


def main():
    if sys.argv[1] == "figures":
        figures(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "profile":
        profile(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        sys.exit(f"unknown command {sys.argv[1]}")


if __name__ == "__main__":
    main()
