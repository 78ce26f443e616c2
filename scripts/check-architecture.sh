#!/usr/bin/env bash
# Fails when a crate of the workspace depends on one the architecture forbids
# (README, "Architecture"): the parts of the data path depend downwards only, the
# agent and the stages meet only in the all-in-one binary, and nothing but the
# all-in-one binary and the end-to-end tests depends on a binary's crate.
#
#   bash scripts/check-architecture.sh
#
# Reads `cargo metadata`; `scripts/test.sh` runs it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo metadata --format-version 1 --no-deps --locked | python3 -c '
import json, sys

# crate -> the workspace crates it may depend on (normal and build dependencies;
# dev-dependencies too, so that tests cannot reach around the rules either).
ALLOWED = {
    "vigil-proto": set(),
    "vigil-runtime": {"vigil-proto"},
    "vigil-agent": {"vigil-proto", "vigil-runtime"},
    "vigil-aggregator": {"vigil-proto", "vigil-runtime"},
    "vigil-all-in-one": {"vigil-proto", "vigil-runtime", "vigil-agent", "vigil-aggregator"},
    "vigil-tests": {"vigil-proto", "vigil-runtime", "vigil-agent", "vigil-aggregator"},
}

metadata = json.load(sys.stdin)
members = {package["name"]: package for package in metadata["packages"]}
problems = []
for name in sorted(members):
    if name not in ALLOWED:
        problems.append(f"{name}: a new crate; add its allowed dependencies to scripts/check-architecture.sh and the README")
        continue
    for dependency in members[name]["dependencies"]:
        target = dependency["name"]
        if target in members and target not in ALLOWED[name]:
            kind = dependency["kind"] or "normal"
            problems.append(f"{name} depends on {target} ({kind}), which the architecture forbids")
for problem in problems:
    print(f"check-architecture: {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"check-architecture: {len(members)} crates, every dependency allowed")
'
