#!/usr/bin/env python3
"""The alert benchmark's fleet as one Prometheus text exposition, for Prometheus to
scrape: every series of `series.tsv` (written by the benchmark's `export`) with
the value the benchmark's function gives at the current poll (one poll per 10 s
since the server started), so Prometheus sees the same series, label sets and
values as Vigil's rules engine.

    alert_exposition.py SERIES_TSV PORT
"""

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POLL_SECONDS = 10


def load(path):
    series = []
    with open(path) as file:
        for line in file:
            name, counter, base, step, phase = line.rstrip("\n").split("\t")
            series.append((name, counter == "1", float(base), float(step), int(phase)))
    return series


def render(series, poll):
    """The value functions of the benchmark's `Series::value_at`."""
    lines = []
    for name, counter, base, step, phase in series:
        if counter:
            jitter = ((poll * 7 + phase) % 10) / 100
            lines.append(f"{name} {int(base + step * (poll + jitter))}")
        else:
            saw = ((poll + phase) % 12) / 12
            lines.append(f"{name} {base + step * saw!r}")
    lines.append("")
    return "\n".join(lines).encode()


def main():
    series = load(sys.argv[1])
    port = int(sys.argv[2])
    started = time.monotonic()
    cache = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            poll = int((time.monotonic() - started) // POLL_SECONDS)
            if poll not in cache:
                cache.clear()
                cache[poll] = render(series, poll)
            body = cache[poll]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
