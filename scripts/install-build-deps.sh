#!/usr/bin/env bash
# Installs what building Vigil needs beyond Rust on Debian: protoc (etcd-client's
# build script compiles etcd's .proto files) and the OpenSSL headers (librdkafka's
# TLS). Idempotent: does nothing when both are present.
set -euo pipefail

missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
dpkg-query -W -f='${Status}' libssl-dev 2>/dev/null | grep -q 'install ok installed' || missing+=(libssl-dev)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-build-deps: installing ${missing[*]}"
    sudo_if_needed=()
    [ "$(id -u)" -eq 0 ] || sudo_if_needed=(sudo)
    "${sudo_if_needed[@]}" apt-get update -q
    "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
