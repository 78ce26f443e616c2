#!/usr/bin/env bash
# Builds Vigil and starts the all-in-one mode on this host: agent sources, the alert
# stage and the index stage in one process, no Kafka, etcd or Elasticsearch needed.
# Installs the build prerequisites (C compiler, make, OpenSSL headers) if they are
# missing.
# Extra arguments go to `vigil-all-in-one` (see `--help`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-build-deps.sh
cargo build --release --locked -p vigil-all-in-one
exec target/release/vigil-all-in-one "$@"
