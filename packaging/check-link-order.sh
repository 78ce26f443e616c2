#!/usr/bin/env bash
# Fails when the agent binary no longer has most of the functions agent/link-order.txt
# lists, which happens after a toolchain or dependency update (the names carry their
# hashes) and silently undoes the packing of the agent's code:
#
#   bash packaging/check-link-order.sh target/dist/vigil-agent [minimum percent, 90]
#
# Prints how many listed functions the binary has. The packaging builds and the
# benchmarks run it on the dist agent; `bash packaging/link-order.sh` writes the list
# anew.
set -euo pipefail

binary=${1:?usage: check-link-order.sh BINARY [MINIMUM_PERCENT]}
minimum=${2:-90}
list="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/agent/link-order.txt"

listed=$(grep -cv '^#' "$list")
found=$(comm -12 <(grep -v '^#' "$list" | sort -u) <(nm "$binary" | awk 'NF == 3 { print $3 }' | sort -u) | wc -l)
echo "link order: $found of $listed listed functions are in $(basename "$binary")"
if ((found * 100 < listed * minimum)); then
    echo "error: fewer than $minimum % of the functions in agent/link-order.txt are in $binary;" \
        "the list is stale (toolchain or dependencies changed): run bash packaging/link-order.sh" >&2
    exit 1
fi
