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

# Says how many of the functions agent/link-order.txt lists binary $1 has, and stops
# the benchmark when the list is stale: the agent's code would not be packed and its
# resident memory would not be what the benchmark means to measure.
link_order_coverage() {
    bash "$ROOT/packaging/check-link-order.sh" "$1"
}

# Builds vigil-agent with the `dist` profile unless $1 is 1, then points AGENT at a
# private copy in $WORK: the shared target directory may be rebuilt while a script runs.
dist_agent() {
    local built="${CARGO_TARGET_DIR:-$ROOT/target}/dist/vigil-agent"
    if [[ ${1:-0} != 1 ]]; then
        echo "building vigil-agent (dist profile)" >&2
        (cd "$ROOT" && cargo build --profile dist -p vigil-agent)
    fi
    [[ -x $built ]] || { echo "error: $built is missing" >&2; exit 1; }
    cp "$built" "$WORK/vigil-agent"
    AGENT="$WORK/vigil-agent"
}

# Waits up to 30 s until something listens on loopback port $1.
wait_tcp() {
    local port=$1 deadline=$((SECONDS + 30))
    until python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$port" 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "error: nothing listens on port $port" >&2; exit 1; }
        sleep 0.05
    done
}

# Starts a private tansu broker ($TANSU, memory storage, files under $WORK/tansu) on a
# free port; sets BROKER_PORT and TANSU_PID once it accepts connections.
start_tansu() {
    [[ -x $TANSU ]] || { echo "error: tansu is missing at $TANSU (bash scripts/install-test-deps.sh installs it)" >&2; exit 1; }
    BROKER_PORT=$(free_port)
    mkdir -p "$WORK/tansu"
    (cd "$WORK/tansu" && RUST_LOG=warn NO_COLOR=1 exec "$TANSU" broker \
        --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
        --storage-engine memory://tansu/) >"$WORK/tansu.log" 2>&1 &
    TANSU_PID=$!
    PIDS+=("$TANSU_PID")
    wait_tcp "$BROKER_PORT"
}
