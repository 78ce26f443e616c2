#!/usr/bin/env bash
# Installs what building Vigil needs beyond Rust on Debian: C and C++ compilers and
# make (the -sys crates build librdkafka, whose configure insists on a C++ compiler,
# and zstd from source), pkg-config, and the C library's and OpenSSL's headers
# (librdkafka's TLS). No protoc: the wire schema's generated code is checked in,
# etcd is reached over its JSON gateway, and the schema's contract test uses the
# protoc that comes with its dev-dependency.
#
# Checks for the files the build uses, not only for packages, installs what is
# missing, and fails naming any file still missing. Idempotent.
set -euo pipefail

say() { echo "install-build-deps: $*"; }

# package → a file the build needs from it
declare -A needed_files=(
    [gcc]=/usr/bin/gcc
    [g++]=/usr/bin/g++
    [make]=/usr/bin/make
    [pkg-config]=/usr/bin/pkg-config
    [libssl-dev]=/usr/include/openssl/ssl.h
    [libc6-dev]=/usr/include/stdio.h
)

missing=()
for package in "${!needed_files[@]}"; do
    [ -e "${needed_files[$package]}" ] || missing+=("$package")
done

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    sudo_if_needed=()
    [ "$(id -u)" -eq 0 ] || sudo_if_needed=(sudo)
    "${sudo_if_needed[@]}" apt-get update -q
    "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

for package in "${!needed_files[@]}"; do
    if [ ! -e "${needed_files[$package]}" ]; then
        say "still missing ${needed_files[$package]} (from $package)" >&2
        exit 1
    fi
done
command -v cc >/dev/null 2>&1 || {
    say "no C compiler as \`cc\` on PATH" >&2
    exit 1
}
