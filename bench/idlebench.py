#!/usr/bin/env python3
"""Helper of bench/idle.sh: the agent's CPU at rest with a Kafka client.

Standard library only; reuses bench/logbench.py (line files, /proc and /metrics
readers). Subcommands:

  at-start --pid PID --seconds S --slice-s N
      Waits until the process is S seconds old (by its start time in
      /proc/<pid>/stat) and prints one JSON object: CPU ticks at every N seconds
      of its age (the first slice includes the start), then each thread's ticks.
  after-burst --pid PID --source FILE --target PATH --lines N --metrics-url URL
              --checkpoints FILE --seconds S --slice-s N --timeout T
      Links the prepared file into the watched path, waits until every line is
      acknowledged (`vigil_agent_log_lines_sent_total`) and the checkpoint file
      holds the file's end, then records CPU ticks every N seconds for S seconds
      and prints one JSON object, with each thread's ticks over those S seconds.
  report MACHINE_JSON AT_START_JSON AFTER_BURST_JSON LIMIT_PERCENT
      Prints the figures and pass/fail against LIMIT_PERCENT of a core; exits 1
      on a failure.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import logbench  # noqa: E402  (the log-shipping benchmark's helpers)

CLK_TCK = logbench.CLK_TCK


def process_age_s(pid):
    """Seconds since the process started (field 22 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    start_ticks = int(fields[19])
    with open("/proc/uptime", encoding="ascii") as uptime:
        now = float(uptime.read().split()[0])
    return now - start_ticks / CLK_TCK


def thread_ticks(pid):
    """utime+stime of each live thread, by `name/tid`."""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8") as comm:
                name = comm.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        threads[f"{name}/{tid}"] = int(fields[11]) + int(fields[12])
    return threads


def thread_delta(before, after):
    """Ticks each thread used between two `thread_ticks` readings, busiest first;
    a thread that was born meanwhile counts from zero."""
    delta = {key: ticks - before.get(key, 0) for key, ticks in after.items()}
    return dict(sorted(((k, v) for k, v in delta.items() if v), key=lambda kv: -kv[1]))


def sample_slices(pid, start_age_s, seconds, slice_s):
    """CPU ticks at the process age `start_age_s + k * slice_s` for k = 0..,
    up to `start_age_s + seconds`."""
    ticks = []
    edge = start_age_s
    while edge <= start_age_s + seconds + 1e-9:
        wait = edge - process_age_s(pid)
        if wait > 0:
            time.sleep(wait)
        ticks.append(logbench.cpu_ticks(pid))
        edge += slice_s
    return ticks


def at_start(opts):
    pid = int(opts["--pid"])
    seconds, slice_s = float(opts["--seconds"]), float(opts["--slice-s"])
    threads0 = thread_ticks(pid)
    # The first slice starts at the process' start, where it had used no CPU.
    ticks = [0] + sample_slices(pid, slice_s, seconds - slice_s, slice_s)
    threads = thread_delta({}, thread_ticks(pid))
    print(json.dumps({
        "slice_s": slice_s,
        "ticks": ticks,
        "threads_at_start": sorted(threads0),
        "threads": threads,
        "rss_kib": logbench.status_kib(pid, "VmRSS"),
    }))


def checkpoint_offset(path, target):
    """The acknowledged offset the checkpoint file holds for `target` (0 if none)."""
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return 0

    best = 0

    def visit(node, under_target):
        nonlocal best
        if isinstance(node, dict):
            here = under_target or target in node.values()
            for key, value in node.items():
                if key == "offset" and here and isinstance(value, int):
                    best = max(best, value)
                else:
                    visit(value, here)
        elif isinstance(node, list):
            for value in node:
                visit(value, under_target)

    visit(state, False)
    return best


def after_burst(opts):
    pid = int(opts["--pid"])
    source, target = opts["--source"], opts["--target"]
    lines, size = int(opts["--lines"]), os.path.getsize(source)
    metrics_url, checkpoints = opts["--metrics-url"], opts["--checkpoints"]
    seconds, slice_s = float(opts["--seconds"]), float(opts["--slice-s"])
    timeout_s = float(opts["--timeout"])

    cpu0 = logbench.cpu_ticks(pid)
    t0 = time.monotonic()
    os.link(source, target)
    while logbench.metric(metrics_url, "vigil_agent_log_lines_sent_total") < lines:
        if time.monotonic() - t0 > timeout_s:
            sys.exit(f"not every line was acknowledged within {timeout_s}s")
        time.sleep(0.05)
    acked_s = time.monotonic() - t0
    while checkpoint_offset(checkpoints, target) < size:
        if time.monotonic() - t0 > timeout_s:
            sys.exit(f"the checkpoint did not reach {size} within {timeout_s}s")
        time.sleep(0.05)
    burst_ticks = logbench.cpu_ticks(pid) - cpu0
    burst_wall = time.monotonic() - t0

    threads0 = thread_ticks(pid)
    begin = process_age_s(pid)
    ticks = sample_slices(pid, begin, seconds, slice_s)
    threads = thread_delta(threads0, thread_ticks(pid))
    print(json.dumps({
        "bytes": size,
        "lines": lines,
        "acked_s": round(acked_s, 3),
        "burst_wall_s": round(burst_wall, 3),
        "burst_ticks": burst_ticks,
        "slice_s": slice_s,
        "ticks": ticks,
        "threads": threads,
        "rss_kib": logbench.status_kib(pid, "VmRSS"),
    }))


def percent(ticks, seconds):
    return 100.0 * ticks / CLK_TCK / seconds


def report(machine_path, start_path, burst_path, limit):
    machine = json.load(open(machine_path, encoding="utf-8"))
    start = json.load(open(start_path, encoding="utf-8"))
    burst = json.load(open(burst_path, encoding="utf-8"))
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, kernel {machine['kernel']}, "
          f"{machine['date']}")
    failed = []

    def judge(what, ticks, seconds):
        share = percent(ticks, seconds)
        ok = share <= limit
        if not ok:
            failed.append(what)
        print(f"  {what}: {ticks / CLK_TCK:.2f} CPU-s in {seconds:.0f} s = {share:.3f} % of a core "
              f"-> {'met' if ok else 'MISSED'} (<= {limit} %)")

    def slices(record, offset_s):
        step = record["slice_s"]
        ticks = record["ticks"]
        cells = []
        for i in range(1, len(ticks)):
            begin = offset_s + (i - 1) * step
            cells.append(f"{begin:.0f}-{begin + step:.0f} s: {percent(ticks[i] - ticks[i - 1], step):.3f} %")
        return cells

    def threads(record):
        return ", ".join(f"{name} {ticks / CLK_TCK:.2f} s" for name, ticks in record["threads"].items()) or "none"

    print()
    print("after start (seconds of the process' age):")
    step = start["slice_s"]
    ticks = start["ticks"]
    index_20, index_60, index_80 = round(20 / step), round(60 / step), round(80 / step)
    print(f"  first minute, start included: {ticks[index_60] / CLK_TCK:.2f} CPU-s "
          f"= {percent(ticks[index_60], 60):.3f} % of a core")
    judge("at rest, seconds 20-80", ticks[index_80] - ticks[index_20], 60)
    print("  per slice: " + "; ".join(slices(start, 0)))
    print(f"  threads (CPU-s since start): {threads(start)}")
    print(f"  RSS at 80 s: {start['rss_kib'] / 1024:.1f} MiB")

    print()
    mib = burst["bytes"] / logbench.MIB
    print(f"burst: {mib:.0f} MiB, {burst['lines']} lines of 100 bytes; every line acknowledged after "
          f"{burst['acked_s']:.1f} s, checkpoint at the end after {burst['burst_wall_s']:.1f} s, "
          f"{burst['burst_ticks'] / CLK_TCK:.2f} CPU-s")
    span = (len(burst["ticks"]) - 1) * burst["slice_s"]
    print(f"after the burst (seconds after the checkpoint reached the end):")
    judge(f"the {span / 60:.0f} minutes after the burst", burst["ticks"][-1] - burst["ticks"][0], span)
    print("  per slice: " + "; ".join(slices(burst, 0)))
    print(f"  threads (CPU-s in those {span:.0f} s): {threads(burst)}")
    print(f"  RSS at the end: {burst['rss_kib'] / 1024:.1f} MiB")
    print()
    print("result: " + ("met" if not failed else "MISSED: " + ", ".join(failed)))
    return 1 if failed else 0


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "at-start":
        at_start(dict(zip(args[::2], args[1::2])))
    elif command == "after-burst":
        after_burst(dict(zip(args[::2], args[1::2])))
    elif command == "report":
        sys.exit(report(args[0], args[1], args[2], float(args[3])))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
