#!/usr/bin/env bash
# Proves the README's set-up on a fresh Debian 12 system: builds a minimal Debian 12
# root with debootstrap (what a new machine with Rust has: the base system and
# CA certificates), binds this machine's Rust toolchain into it read-only, copies
# the checkout in (tracked and new files, nothing ignored, no build output), and
# runs there, as a new user would:
#
#   bash scripts/run.sh       until the all-in-one mode prints its banner and its
#                             first reading of the host's metrics
#   bash scripts/install-test-deps.sh
#                             with --test-deps: the test servers' install too
#   bash scripts/test.sh      with --test-suite: the whole test suite, servers
#                             installed and started as on a new machine
#
# It prints the Debian packages each step installed and stops at the first error.
# Run it as root (debootstrap and chroot need it) before submitting any change to
# the build or to the install scripts:
#
#   sudo bash scripts/check-fresh-machine.sh [--test-deps | --test-suite] [--keep]
#
# The root lives in $VIGIL_FRESH_ROOT (default /var/tmp/vigil-fresh-root) and is
# made anew on every run; --keep leaves it behind for a look. The base system's
# packages are cached as a tarball in $VIGIL_CACHE (only what debootstrap fetches;
# everything the scripts install is fetched afresh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
checkout="$PWD"

with_test_deps=false
with_test_suite=false
keep=false
for argument in "$@"; do
    case "$argument" in
    --test-deps) with_test_deps=true ;;
    --test-suite) with_test_suite=true ;;
    --keep) keep=true ;;
    -h | --help)
        sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "check-fresh-machine: unknown option $argument (see --help)" >&2
        exit 2
        ;;
    esac
done

say() { echo "check-fresh-machine: $*"; }
fail() {
    echo "check-fresh-machine: FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run it as root (debootstrap and chroot need it)"

VIGIL_CACHE="${VIGIL_CACHE:-$HOME/.cache/vigil}"
root="${VIGIL_FRESH_ROOT:-/var/tmp/vigil-fresh-root}"
mirror="${VIGIL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
base_tarball="$VIGIL_CACHE/debootstrap-bookworm-minbase.tgz"
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"

# The toolchain the checkout asks for (rust-toolchain.toml), else the default one.
toolchain_channel="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml 2>/dev/null || true)"
toolchain_dir="$(find "$rustup_home/toolchains" -maxdepth 1 -name "${toolchain_channel:-stable}-*" | head -n 1)"
[ -n "$toolchain_dir" ] && [ -x "$toolchain_dir/bin/cargo" ] ||
    fail "no Rust toolchain ${toolchain_channel:-stable} under $rustup_home/toolchains"
say "Rust toolchain: $("$toolchain_dir/bin/rustc" --version)"

if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap on this machine"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
fi

mounted=()
cleanup() {
    local index
    for ((index = ${#mounted[@]} - 1; index >= 0; index--)); do
        umount --recursive --lazy "${mounted[index]}" 2>/dev/null || true
    done
    if ! $keep && [ -d "$root" ]; then
        rm -rf --one-file-system "$root"
    fi
}
trap cleanup EXIT

bind() { # bind SOURCE TARGET [ro]
    mkdir -p "$2"
    mount --rbind "$1" "$2"
    mounted+=("$2")
    if [ "${3:-}" = ro ]; then
        mount -o remount,bind,ro "$2"
    fi
}

# A fresh root, every time.
if [ -d "$root" ]; then
    say "removing the previous root $root"
    for mount_point in $(awk -v root="$root" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount --lazy "$mount_point" 2>/dev/null || true
    done
    rm -rf --one-file-system "$root"
fi
mkdir -p "$root" "$VIGIL_CACHE"
if [ ! -s "$base_tarball" ]; then
    say "fetching the Debian 12 base packages into $base_tarball"
    debootstrap --variant=minbase --include=ca-certificates \
        --make-tarball="$base_tarball" bookworm "$root/.tarball-work" "$mirror" >/dev/null
    rm -rf "$root/.tarball-work"
fi
say "creating a minimal Debian 12 root in $root"
debootstrap --variant=minbase --include=ca-certificates \
    --unpack-tarball="$base_tarball" bookworm "$root" "$mirror" >/dev/null
echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
# This machine's network settings, which a new machine on the same network has too:
# name servers, local certificate authorities (a TLS-inspecting proxy's, say) and
# pip's configuration.
cp /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
[ ! -f /etc/pip.conf ] || cp /etc/pip.conf "$root/etc/pip.conf"
# What a booted Debian has and debootstrap leaves out: systemd-tmpfiles makes
# /etc/mtab (snmpd lists file systems from it).
ln -sfn ../proc/self/mounts "$root/etc/mtab"

# The root is a mount point of its own, as `/` is on any machine (the agent lists
# it among the file systems it measures).
mount --bind "$root" "$root"
mounted+=("$root")
mkdir -p "$root/proc" "$root/sys" "$root/dev"
mount -t proc proc "$root/proc"
mounted+=("$root/proc")
bind /sys "$root/sys" ro
bind /dev "$root/dev"
bind "$toolchain_dir" "$root/opt/rust" ro

say "copying the checkout (tracked and new files) to /root/vigil"
mkdir -p "$root/root/vigil"
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do [ -e "$file" ] && printf '%s\0' "$file"; done |
    tar --null --files-from=- -cf - | tar -xf - -C "$root/root/vigil"

# A command in the root as on a machine of its own: its own PID and mount namespaces,
# so that PID 1 and /proc/1/mounts (which the agent reads) belong to the root, not
# to this machine, and a login-like environment: Rust on PATH, nothing from here.
root_exec=(unshare --pid --fork --mount --propagation private chroot "$root"
    /bin/sh -c 'mount -t proc proc /proc && exec "$@"' sh
    /usr/bin/env -i HOME=/root USER=root LANG=C.UTF-8 TERM=dumb
    PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    CARGO_HOME=/root/.cargo)

in_root() { "${root_exec[@]}" bash -c "cd /root/vigil && $1"; }

packages() { chroot "$root" dpkg-query -W -f '${Package}\n' | sort; }

report_installed() { # report_installed STEP BEFORE-FILE
    local added
    added="$(packages | comm -13 "$2" - | tr '\n' ' ')"
    say "$1 installed these Debian packages: ${added:-none}"
}

packages >"$root/.packages-base"
say "the root has $(wc -l <"$root/.packages-base") Debian packages; nothing else"

# 1. The main command, until it shows the all-in-one output.
log="$root/root/run.log"
say "running bash scripts/run.sh (output in $log)"
started=$SECONDS
# In a session of its own, so that stopping it stops everything it started.
setsid "${root_exec[@]}" bash -c \
    "cd /root/vigil && exec bash scripts/run.sh --host-interval 2" >"$log" 2>&1 &
run_pid=$!
wait_for_output() {
    while kill -0 "$run_pid" 2>/dev/null; do
        if grep -q '^Vigil all-in-one' "$log" && grep -q '^metrics ' "$log"; then
            return 0
        fi
        sleep 2
    done
    return 1
}
if ! wait_for_output; then
    tail -n 40 "$log" >&2
    fail "scripts/run.sh exited before the all-in-one output (log above)"
fi
# setsid made the run a process group of its own: stop all of it.
kill -TERM -- "-$run_pid" 2>/dev/null || true
wait "$run_pid" || true
say "scripts/run.sh reached the all-in-one output after $((SECONDS - started)) s:"
# Its own output, without the log lines interleaved with it.
sed -n '/^Vigil all-in-one/,/^metrics /p' "$log" | grep -v $'\e\[' | sed 's/^/    /'
report_installed "scripts/run.sh" "$root/.packages-base"

# 2. The test servers' install, or the whole test suite, on request.
if $with_test_suite; then
    packages >"$root/.packages-before-tests"
    say "running bash scripts/test.sh (output in $root/root/test.log)"
    started=$SECONDS
    if ! in_root "bash scripts/test.sh" >"$root/root/test.log" 2>&1; then
        tail -n 60 "$root/root/test.log" >&2
        fail "scripts/test.sh failed after $((SECONDS - started)) s (log above)"
    fi
    say "scripts/test.sh passed after $((SECONDS - started)) s"
    grep -E '^test result:' "$root/root/test.log" | awk '{ passed += $4; failed += $6 } END { print "check-fresh-machine: tests passed: " passed ", failed: " failed }'
    report_installed "scripts/test.sh" "$root/.packages-before-tests"
elif $with_test_deps; then
    packages >"$root/.packages-before-tests"
    say "running bash scripts/install-test-deps.sh"
    started=$SECONDS
    in_root "bash scripts/install-test-deps.sh" || fail "scripts/install-test-deps.sh failed"
    say "scripts/install-test-deps.sh finished after $((SECONDS - started)) s"
    report_installed "scripts/install-test-deps.sh" "$root/.packages-before-tests"
fi

say "passed"
