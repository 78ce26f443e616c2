#!/usr/bin/env python3
"""Helpers of bench/logs.sh: generate test files, measure one run, print the report.

Standard library only. Subcommands:

  generate PATH LINE_BYTES TOTAL_BYTES [FORMAT]
      Writes lines of exactly LINE_BYTES bytes (newline included) until the file
      holds TOTAL_BYTES rounded down to whole lines; prints the line count.
      FORMAT: plain (an application's text lines, the default), json (one JSON
      object per line, its time under `time`) or access (nginx's combined format).
  wait-http URL TIMEOUT_S
      Polls URL until it answers 200.
  measure ...
      Links the prepared file into the watched path (so the tailer sees a new file
      and reads it from its beginning), waits until everything is shipped, and
      prints one JSON object with wall time, CPU time and memory of the process.
  metric URL NAME
      Exits 0 if a sample of the metric NAME at URL is above 0, 1 otherwise.
  report RESULTS_JSONL MACHINE_JSON
      Prints the table, the tail-only ratio Vigil/rsyslog and the targets.
"""

import json
import os
import random
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

WORDS = (
    "request served upstream cache miss hit backend timeout retry client session "
    "user order payment inventory shard replica leader follower commit offset "
    "partition consumer producer batch flush index query latency bytes status"
).split()
LEVELS = ("INFO ", "INFO ", "INFO ", "DEBUG", "WARN ", "ERROR")


# Distinct bytes generated per file; the rest repeats them. Batches are far smaller,
# so the compressors never see the repetition.
UNIQUE_BYTES = 16 * MIB


def words_to(rng, size, exclude=""):
    """Words and numbers, exactly `size` characters long."""
    parts, length = [], 0
    while length < size:
        word = "%s-%d " % (rng.choice(WORDS), rng.randrange(1000000))
        parts.append(word)
        length += len(word)
    return "".join(parts)[:size].replace(exclude, "x") if exclude else "".join(parts)[:size]


def json_line(rng, i, ts, body):
    """One JSON object of `body` characters, its message padded to fit."""
    secs = int(ts)
    head = (
        '{"time":"%s.%03dZ","level":"%s","service":"svc-%d","trace_id":"%032x",'
        '"user":"u%05d","method":"GET","path":"/api/orders/%d","status":%d,'
        '"duration_ms":%d,"msg":"'
        % (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)),
            int((ts - secs) * 1000),
            LEVELS[i % len(LEVELS)].strip().lower(),
            i % 7,
            rng.getrandbits(128),
            rng.randrange(100000),
            rng.randrange(100000),
            (200, 200, 200, 404, 500)[i % 5],
            rng.randrange(2000),
        )
    )
    return head + words_to(rng, body - len(head) - 2) + '"}'


def access_line(rng, i, ts, body):
    """One line of nginx's combined format of `body` characters, its user agent
    padded to fit."""
    head = '203.0.113.%d - - [%s] "GET /api/orders/%d?page=%d HTTP/1.1" %d %d "https://shop.example.net/cart" "' % (
        rng.randrange(256),
        time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(int(ts))),
        rng.randrange(100000),
        i % 9,
        (200, 200, 200, 404, 500)[i % 5],
        rng.randrange(100000),
    )
    return head + words_to(rng, body - len(head) - 1, '"') + '"'


def generate(path, line_bytes, total_bytes, fmt="plain"):
    """Writes realistic-looking log lines (timestamps, levels, ids, words)."""
    rng = random.Random(42)
    lines = total_bytes // line_bytes
    unique = min(lines, UNIQUE_BYTES // line_bytes)
    body = line_bytes - 1
    base = 1795000000.0
    chunk = []
    with open(path + ".unique", "w", encoding="ascii") as out:
        for i in range(unique):
            ts = base + i / 1000.0
            if fmt != "plain":
                line = (json_line if fmt == "json" else access_line)(rng, i, ts, body)
                assert len(line) == body, (fmt, len(line), body)
                chunk.append(line)
                if len(chunk) == 4096:
                    out.write("\n".join(chunk) + "\n")
                    chunk = []
                continue
            secs = int(ts)
            head = "%s.%03dZ %s svc-%d req=%08x user=u%05d " % (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)),
                int((ts - secs) * 1000),
                LEVELS[i % len(LEVELS)],
                i % 7,
                rng.getrandbits(32),
                rng.randrange(100000),
            )
            parts = [head]
            size = len(head)
            while size < body:
                word = "%s=%d " % (rng.choice(WORDS), rng.randrange(1000000))
                parts.append(word)
                size += len(word)
            line = "".join(parts)[:body]
            chunk.append(line)
            if len(chunk) == 4096:
                out.write("\n".join(chunk) + "\n")
                chunk = []
        if chunk:
            out.write("\n".join(chunk) + "\n")
    with open(path + ".unique", "rb") as f:
        block = f.read()
    os.remove(path + ".unique")
    with open(path, "wb") as out:
        for _ in range(lines // unique):
            out.write(block)
        out.write(block[: (lines % unique) * line_bytes])
    print(lines)


def http_get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode("utf-8", "replace")


def wait_http(url, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status, _ = http_get(url)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"{url} did not answer 200 within {timeout_s}s")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15; fields[0] is field 3 (state).
    return int(fields[11]) + int(fields[12])


def status_kib(pid, key):
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def metric(url, name):
    _, text = http_get(url)
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_idle(pid, window_s=1.0, quiet_windows=3, limit_s=30.0):
    """Waits until the process used no CPU for `quiet_windows` windows in a row."""
    deadline = time.monotonic() + limit_s
    quiet = 0
    last = cpu_ticks(pid)
    while quiet < quiet_windows and time.monotonic() < deadline:
        time.sleep(window_s)
        now = cpu_ticks(pid)
        quiet = quiet + 1 if now - last <= 1 else 0
        last = now
    return quiet >= quiet_windows


def measure(args):
    opts = dict(zip(args[::2], args[1::2]))
    pid = int(opts["--pid"])
    source, target = opts["--source"], opts["--target"]
    lines, size = int(opts["--lines"]), os.path.getsize(source)
    timeout_s = float(opts.get("--timeout", "600"))
    metrics_url = opts.get("--metrics-url")
    output_file = opts.get("--output-file")

    def shipped():
        if metrics_url:
            return metric(metrics_url, "vigil_agent_log_lines_sent_total") >= lines
        try:
            return os.path.getsize(output_file) >= size
        except FileNotFoundError:
            return False

    wait_idle(pid, window_s=0.5, quiet_windows=2, limit_s=10)
    idle_before = status_kib(pid, "VmRSS")
    cpu0 = cpu_ticks(pid)
    t0 = time.monotonic()
    os.link(source, target)
    while not shipped():
        if time.monotonic() - t0 > timeout_s:
            sys.exit(f"not everything was shipped within {timeout_s}s")
        time.sleep(0.02)
    wall = time.monotonic() - t0
    cpu = (cpu_ticks(pid) - cpu0) / CLK_TCK
    peak = status_kib(pid, "VmHWM")
    settled = wait_idle(pid)
    idle_after = status_kib(pid, "VmRSS")
    result = {
        "bytes": size,
        "lines": lines,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_rss_kib": peak,
        "idle_rss_before_kib": idle_before,
        "idle_rss_after_kib": idle_after,
        "settled": settled,
    }
    for key in ("--name", "--shipper", "--line-bytes", "--output", "--format"):
        if key in opts:
            result[key[2:].replace("-", "_")] = opts[key]
    print(json.dumps(result))


def report(results_path, machine_path):
    with open(machine_path, encoding="utf-8") as f:
        machine = json.load(f)
    rows = [json.loads(line) for line in open(results_path, encoding="utf-8") if line.strip()]
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram']} RAM, "
          f"kernel {machine['kernel']}, {machine['date']}")
    print(f"files: {machine['sizes']}")
    header = ("shipper", "lines", "output", "MiB/s", "MiB/cpu-s", "cpu-s/GiB",
              "peak RSS", "idle RSS (before/after)")
    table = [header]
    by_key = {}
    for r in rows:
        mib = r["bytes"] / MIB
        rate = mib / r["wall_s"] if r["wall_s"] else float("inf")
        per_cpu = mib / r["cpu_s"] if r["cpu_s"] else float("inf")
        per_gib = r["cpu_s"] / (r["bytes"] / (1024 * MIB))
        r.update(rate=rate, per_cpu=per_cpu, per_gib=per_gib)
        fmt = r.get("format", "plain")
        by_key[(r["shipper"], r["line_bytes"], r["output"], fmt)] = r
        table.append((
            r["shipper"],
            f"{r['line_bytes']} B" + ("" if fmt == "plain" else f" {fmt}"),
            r["output"],
            f"{rate:.1f}",
            f"{per_cpu:.1f}",
            f"{per_gib:.2f}",
            f"{r['peak_rss_kib'] / 1024:.1f} MiB",
            f"{r['idle_rss_before_kib'] / 1024:.1f} / {r['idle_rss_after_kib'] / 1024:.1f} MiB"
            + ("" if r["settled"] else " (not idle)"),
        ))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())

    print()
    print("tail-only throughput, Vigil (discard output) / rsyslog (imfile -> omfile):")
    for line_bytes in sorted({r["line_bytes"] for r in rows}, key=int):
        vigil = by_key.get(("vigil", line_bytes, "discard", "plain"))
        rsys = by_key.get(("rsyslog", line_bytes, "omfile", "plain"))
        if vigil and rsys:
            print(f"  {line_bytes} B lines: wall {vigil['rate'] / rsys['rate']:.2f}x, "
                  f"per CPU-second {vigil['per_cpu'] / rsys['per_cpu']:.2f}x")

    print()
    print("targets:")
    lz4 = by_key.get(("vigil", "100", "kafka-lz4", "plain"))
    if lz4:
        ok = lz4["per_cpu"] >= 150
        print(f"  >= 150 MiB/s per core, lz4, 100 B lines: {lz4['per_cpu']:.1f} "
              f"-> {'met' if ok else 'MISSED'}")
    for fmt, what, target in (("json", "JSON parser + timestamp", 100),
                              ("access", "nginx_access preset (regex)", 50)):
        for r in rows:
            if r["shipper"] == "vigil" and r.get("format") == fmt:
                print(f"  >= {target} MiB per CPU-second, {what}, {r['line_bytes']} B lines, "
                      f"{r['output']}: {r['per_cpu']:.1f} "
                      f"-> {'met' if r['per_cpu'] >= target else 'MISSED'}")
    vigil_rows = [r for r in rows if r["shipper"] == "vigil" and r["output"].startswith("kafka")]
    if vigil_rows:
        peak = max(r["peak_rss_kib"] for r in vigil_rows) / 1024
        print(f"  peak RSS <= 32 MiB at full rate: max {peak:.1f} MiB "
              f"-> {'met' if peak <= 32 else 'MISSED'}")
        idle = max(r["idle_rss_before_kib"] for r in vigil_rows) / 1024
        after = max(r["idle_rss_after_kib"] for r in vigil_rows) / 1024
        print(f"  idle RSS <= 10 MiB: before load max {idle:.1f} MiB "
              f"-> {'met' if idle <= 10 else 'MISSED'}; after load max {after:.1f} MiB "
              f"-> {'met' if after <= 10 else 'MISSED'}")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "generate":
        generate(args[0], int(args[1]), int(args[2]), *args[3:4])
    elif command == "wait-http":
        wait_http(args[0], float(args[1]))
    elif command == "measure":
        measure(args)
    elif command == "metric":
        total = 0.0
        _, text = http_get(args[0])
        for line in text.splitlines():
            if line.startswith(args[1] + " ") or line.startswith(args[1] + "{"):
                total += float(line.rsplit(" ", 1)[1])
        sys.exit(0 if total > 0 else 1)
    elif command == "report":
        report(args[0], args[1])
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
