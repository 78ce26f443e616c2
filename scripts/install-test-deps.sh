#!/usr/bin/env bash
# Installs what the end-to-end tests need on a fresh Debian 12 machine with Rust:
# the build's prerequisites (C compiler, OpenSSL headers), etcd, net-snmp's agent and tools,
# openssl and nginx for the TLS tests (a CA of their own; nginx terminates TLS), the
# Elasticsearch-API server noida-db (PyPI, in a venv) and the Kafka-compatible broker
# tansu (crates.io, built once into a cache because it takes about 10 minutes).
# Idempotent: anything already present is left alone.
set -euo pipefail

VIGIL_CACHE="${VIGIL_CACHE:-$HOME/.cache/vigil}"
NOIDA_VERSION="0.2.3"
TANSU_VERSION="^0.6"
NOIDA_VENV="$VIGIL_CACHE/noida-venv"
TANSU_ROOT="$VIGIL_CACHE/tansu"

say() { echo "install-test-deps: $*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

# The build's own prerequisites come first.
bash "$(dirname "${BASH_SOURCE[0]}")/install-build-deps.sh"

# etcd, snmpd and the net-snmp tools for the tests, openssl (the TLS tests make
# their CA with it) and nginx with its stream module (the TLS tests run their own
# nginx processes as TLS terminators, not the packaged service), systemd for
# reviewing the units with systemd-analyze, systemd-journal-remote for writing the
# real journal files the journald tests read;
# Debian's Python only if no Python that can make a venv is on PATH.
debian_packages=(etcd-server etcd-client snmpd snmp openssl nginx libnginx-mod-stream systemd systemd-journal-remote)
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    debian_packages+=(python3 python3-venv)
fi

missing_packages=()
for package in "${debian_packages[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)" != "install ok installed" ]; then
        missing_packages+=("$package")
    fi
done

if [ "${#missing_packages[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing_packages[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing_packages[@]}"
else
    say "Debian packages already installed: ${debian_packages[*]}"
fi

mkdir -p "$VIGIL_CACHE"

# noida-db: Elasticsearch-API-compatible server from PyPI, in its own venv.
if [ -x "$NOIDA_VENV/bin/noida-db" ] &&
    compgen -G "$NOIDA_VENV/lib/python3*/site-packages/noida_db-$NOIDA_VERSION.dist-info" >/dev/null; then
    say "noida-db $NOIDA_VERSION already installed in $NOIDA_VENV"
else
    say "installing noida-db==$NOIDA_VERSION into $NOIDA_VENV"
    python3 -m venv --clear "$NOIDA_VENV"
    "$NOIDA_VENV/bin/pip" install --quiet --disable-pip-version-check "noida-db==$NOIDA_VERSION"
fi

# tansu: Kafka-compatible broker from crates.io, built once (about 10 minutes) and cached.
if [ -x "$TANSU_ROOT/bin/tansu" ]; then
    say "tansu already installed at $TANSU_ROOT/bin/tansu"
else
    say "building tansu $TANSU_VERSION into $TANSU_ROOT (about 10 minutes on 2 cores, done once)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features libsql,dynostore --root "$TANSU_ROOT"
fi

say "done"
