#!/usr/bin/env bash
# Runs every test of the workspace against real servers: installs what is missing,
# builds the binaries the end-to-end tests start, then runs `cargo test --workspace`
# with any extra arguments passed through (e.g. `bash scripts/test.sh -- --nocapture`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-test-deps.sh

VIGIL_CACHE="${VIGIL_CACHE:-$HOME/.cache/vigil}"
export VIGIL_TANSU_BIN="${VIGIL_TANSU_BIN:-$VIGIL_CACHE/tansu/bin/tansu}"
export VIGIL_NOIDA_BIN="${VIGIL_NOIDA_BIN:-$VIGIL_CACHE/noida-venv/bin/noida-db}"

cargo build --workspace --bins
cargo test --workspace "$@"
