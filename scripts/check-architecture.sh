#!/usr/bin/env bash
# Fails when a crate of the workspace depends on one the architecture forbids
# (README, "Architecture"): the parts of the data path depend downwards only, the
# agent and the stages meet only in the all-in-one binary, nothing but the
# all-in-one binary and the end-to-end tests depends on a binary's crate, and the
# pure crates (the wire contract, the file notation, the rules engine) reach no
# async runtime, Kafka, HTTP or etcd client, not even through another crate.
#
#   bash scripts/check-architecture.sh
#
# Reads `cargo metadata`; `scripts/test.sh` runs it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo metadata --format-version 1 --locked | python3 -c '
import json, sys

# crate -> the workspace crates it may depend on (normal and build dependencies;
# dev-dependencies too, so that tests cannot reach around the rules either).
ALLOWED = {
    "vigil-proto": set(),
    "vigil-config": set(),
    "vigil-rules": {"vigil-proto", "vigil-config"},
    "vigil-runtime": {"vigil-proto"},
    "vigil-agent": {"vigil-proto", "vigil-config", "vigil-runtime"},
    "vigil-aggregator": {"vigil-proto", "vigil-config", "vigil-rules", "vigil-runtime"},
    "vigil-all-in-one": {"vigil-proto", "vigil-config", "vigil-rules", "vigil-runtime", "vigil-agent", "vigil-aggregator"},
    "vigil-tests": {"vigil-proto", "vigil-config", "vigil-rules", "vigil-runtime", "vigil-agent", "vigil-aggregator"},
}
PURE = ["vigil-proto", "vigil-config", "vigil-rules"]
IMPURE = {"tokio", "rdkafka", "reqwest", "hyper", "axum", "mio"}

metadata = json.load(sys.stdin)
workspace = set(metadata["workspace_members"])
members = {package["name"]: package for package in metadata["packages"] if package["id"] in workspace}
names = {package["id"]: package["name"] for package in metadata["packages"]}
# What each package pulls in when built (normal dependencies only).
built_with = {
    node["id"]: [dep["pkg"] for dep in node["deps"] if any(kind["kind"] is None for kind in dep["dep_kinds"])]
    for node in metadata["resolve"]["nodes"]
}
problems = []
for name in PURE:
    (start,) = [id for id, package in names.items() if package == name and id in workspace]
    seen, stack = set(), [start]
    while stack:
        for dependency in built_with[stack.pop()]:
            if dependency not in seen:
                seen.add(dependency)
                stack.append(dependency)
    for reached in sorted({names[id] for id in seen} & IMPURE):
        problems.append(f"{name} is pure but its build pulls in {reached}")
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
