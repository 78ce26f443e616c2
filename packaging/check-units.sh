#!/usr/bin/env bash
# Reviews the systemd units as `systemd-analyze security` does, without
# installing them: prints each unit's exposure score and fails when one is above
# the limit or lacks a setting every Vigil unit must have.
#
#   bash packaging/check-units.sh [maximum exposure, 2.0]
set -euo pipefail

units_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/systemd"
maximum=${1:-2.0}

# Settings every unit carries; the stages also cap their memory.
required=(NoNewPrivileges=yes ProtectSystem=strict ProtectClock=yes ProtectKernelLogs=yes
    ProtectHostname=yes RestrictSUIDSGID=yes UMask=0077 SystemCallFilter=@system-service
    LimitNOFILE= MemoryMax= CapabilityBoundingSet=)

status=0
for unit in "$units_dir"/*.service; do
    name=$(basename "$unit")
    for setting in "${required[@]}"; do
        if ! grep -q "^${setting}" "$unit"; then
            echo "check-units: $name lacks $setting" >&2
            status=1
        fi
    done
    report=$(systemd-analyze security --offline=yes "$unit" 2>&1) || true
    score=$(sed -n 's/^→ Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$report")
    if [ -z "$score" ]; then
        echo "check-units: systemd-analyze gave no exposure level for $name:" >&2
        echo "$report" >&2
        status=1
        continue
    fi
    echo "check-units: $name exposure $score (at most $maximum)"
    if awk -v score="$score" -v maximum="$maximum" 'BEGIN { exit !(score > maximum) }'; then
        grep '✗' <<<"$report" >&2
        status=1
    fi
done
exit "$status"
