# Sourced by the benchmark scripts: their scratch directory, the processes they
# start, free ports and waiting for a server to answer. Set NAME (the scratch directory's prefix) before sourcing.
#
#   BENCH_WORK_DIR   keep the scratch directory here (default: a new one under /tmp,
#                    removed at exit)

if [[ -n "${BENCH_WORK_DIR:-}" ]]; then
    WORK=$BENCH_WORK_DIR
    mkdir -p "$WORK"
    KEEP_WORK=1
else
    WORK=$(mktemp -d "/tmp/$NAME.XXXXXX")
    KEEP_WORK=0
fi

# Processes started by the script; stopped at exit.
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP_WORK == 0 ]]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops process $1 (started by the script) and forgets it.
stop() {
    local pid=$1 keep=() p
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do
        [[ $p == "$pid" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to 10 s until URL $1 answers with success; $2 names what should answer.
wait_for_url() {
    local url=$1 what=$2
    for _ in $(seq 1 100); do
        if curl -fs -o /dev/null "$url"; then
            return 0
        fi
        sleep 0.1
    done
    echo "error: $what did not answer at $url" >&2
    exit 1
}

# Says how many of the functions agent/link-order.txt lists binary $1 has. The list
# names them by symbol names that carry the toolchain's and the dependencies' hashes;
# when few are found, the agent's code is no longer packed and its resident memory
# grows (bash packaging/link-order.sh writes the list anew).
link_order_coverage() {
    local list="$ROOT/agent/link-order.txt" listed found
    listed=$(grep -cv '^#' "$list")
    found=$(comm -12 <(grep -v '^#' "$list" | sort -u) <(nm "$1" | awk 'NF == 3 { print $3 }' | sort -u) | wc -l)
    echo "link order: $found of $listed listed functions are in $(basename "$1")"
}
