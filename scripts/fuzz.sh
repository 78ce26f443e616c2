#!/usr/bin/env bash
# Runs the coverage-guided fuzz targets of fuzz/ (libFuzzer through cargo-fuzz,
# on the stable toolchain, without sanitizers: the code is safe Rust), each for
# MINUTES minutes (default 1), every target unless some are named:
#
#   bash scripts/fuzz.sh                   # every target, 1 minute each
#   bash scripts/fuzz.sh 10 metric_batch   # one target, 10 minutes
#
# New inputs that reach new code are added to fuzz/corpus/<target>/; minimise a
# corpus before committing it with
# `cd fuzz && cargo fuzz cmin --sanitizer none <target>`. A crash, panic or
# failed assertion stops that target and leaves its input in
# fuzz/artifacts/<target>/; the script runs the remaining targets, prints every
# crashing input and exits non-zero. Reproduce one with
# `cd fuzz && cargo fuzz run --sanitizer none <target> <artifact>`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"

minutes="${1:-1}"
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || [ "$minutes" -eq 0 ]; then
    echo "fuzz.sh: MINUTES must be a positive whole number, not \`$minutes\`" >&2
    exit 2
fi
shift $(( $# > 0 ? 1 : 0 ))

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

known=$(cargo fuzz list)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets <<<"$known"
fi
for target in "${targets[@]}"; do
    if ! grep -qx -- "$target" <<<"$known"; then
        echo "fuzz.sh: no fuzz target \`$target\`; there are: $(echo $known)" >&2
        exit 2
    fi
done

# Built once, then run directly: a source that changes during a long run does
# not rebuild the targets between them.
cargo fuzz build --sanitizer none
bin="target/$(rustc -vV | sed -n 's/^host: //p')/release"

logs=$(mktemp -d /tmp/vigil-fuzz.XXXXXX)
crashed=()
for target in "${targets[@]}"; do
    echo "fuzz.sh: $target for $minutes minute(s); output in $logs/$target.log"
    mkdir -p "corpus/$target" "artifacts/$target"
    if "$bin/$target" -artifact_prefix="$PWD/artifacts/$target/" \
        -max_total_time=$((minutes * 60)) -timeout=10 -print_final_stats=1 \
        "corpus/$target" >"$logs/$target.log" 2>&1; then
        grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "$logs/$target.log" |
            sed "s/^/fuzz.sh: $target /" || true
    else
        artifact=$(grep -o 'Test unit written to .*' "$logs/$target.log" | tail -n 1 | sed 's/^Test unit written to //')
        echo "fuzz.sh: $target FAILED; input: ${artifact:-none written, see the log}" >&2
        grep -E 'panicked at|^thread|ERROR: libFuzzer' "$logs/$target.log" | head -n 5 >&2 || true
        crashed+=("$target")
    fi
done

if [ ${#crashed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${crashed[*]} (logs in $logs)" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${#targets[@]} target(s)"
