#!/usr/bin/env bash
# Runs every test of the workspace against real servers: installs what is missing,
# checks formatting, the crate graph and the systemd units' hardening, builds the
# binaries the end-to-end tests start, runs `cargo test --workspace` with any extra
# arguments passed through (e.g. `bash scripts/test.sh -- --nocapture`), then
# clippy and the shipped rules' tests.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-test-deps.sh

VIGIL_CACHE="${VIGIL_CACHE:-$HOME/.cache/vigil}"
export VIGIL_TANSU_BIN="${VIGIL_TANSU_BIN:-$VIGIL_CACHE/tansu/bin/tansu}"
export VIGIL_NOIDA_BIN="${VIGIL_NOIDA_BIN:-$VIGIL_CACHE/noida-venv/bin/noida-db}"

# A fresh checkout gains nothing from incremental compilation, and its caches
# would double the size of the build folder.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

cargo fmt --all -- --check
bash scripts/check-architecture.sh
bash packaging/check-units.sh
cargo build --workspace --bins
cargo test --workspace "$@"
cargo clippy --workspace --all-targets -- -D warnings
# Every shipped example rule is covered by its tests.
target/debug/vigil-aggregator rules check rules
target/debug/vigil-aggregator rules test rules
