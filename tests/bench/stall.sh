#!/usr/bin/env bash
# Reads while a node writes gigabytes: flushes and compactions must not stall it.
#
#   tests/bench/stall.sh [values] [value bytes]
#
# 1. One node, --fsync always, N=1: redis-benchmark SETs `values` values (default 2,000,000) of
#    `value bytes` (default 1024) under random keys at c=50, while ten clients each GET a random
#    key every 2 ms. Prints the GETs' p50/p99/p999/max during the load, and the storage work done.
# 2. Three nodes, N=3, the same load on node 1: also counts how often any node saw a peer go
#    down (each node's /v1/status, polled every 200 ms).
# KEEL=path runs another keel binary (an older build, to compare); otherwise keel is built here.
# PROBE_NICE=n sets the probe's nice value (default -10 when run as root; 0: the load's).
# LOAD_NICE=n runs redis-benchmark at nice n (default 0): on a machine with as few cores as this
#   one, the load generator competes with the node for them, which a real client does not.
# ONE_NODE_ONLY=1 skips the three-node part.
# Installs redis-tools if missing. Data goes to a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

values=${1:-2000000}
size=${2:-1024}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v redis-benchmark >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-tools >/dev/null
fi
if [ -z "${KEEL:-}" ]; then
  cargo build --release -q -p keel
  KEEL=target/release/keel
fi

# The probe measures the node, so it runs at a higher CPU priority than the
# load where it may (root): on a machine with fewer cores than busy threads its
# own waits for a core would otherwise count as the node's. PROBE_NICE=0 runs it
# at the load's priority.
probe_nice=()
if [ "${PROBE_NICE:--10}" != 0 ] && nice -n "${PROBE_NICE:--10}" true 2>/dev/null && [ "$(id -u)" = 0 ]; then
  probe_nice=(nice -n "${PROBE_NICE:--10}")
fi
echo "probe priority: ${probe_nice[*]:-as the load}"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_port() { for _ in $(seq 200); do redis-cli -p "$1" PING >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "port $1 never answered" >&2; exit 1; }

# Starts node $1 of a cluster of $2 nodes; ports 174N0 (peer), 174N1 (HTTP), 174N2 (Redis).
start_node() {
  local id=$1 count=$2 peers=()
  for other in $(seq "$count"); do
    [ "$other" = "$id" ] || peers+=("$other@127.0.0.1:174${other}0")
  done
  local peer_flag=()
  [ "${#peers[@]}" = 0 ] || peer_flag=(--peer "$(IFS=,; echo "${peers[*]}")")
  "$KEEL" node --node "$id" --data-dir "$work/node-$id" --fsync always \
    --listen-peer "127.0.0.1:174${id}0" --listen-http "127.0.0.1:174${id}1" --listen-redis "127.0.0.1:174${id}2" \
    "${peer_flag[@]}" --log warn 2>>"${KEEL_LOG:-$work/keel.log}" &
  pids+=($!)
}

# Loads node 1 while probing it; $@ are the HTTP ports to poll for peer state.
load() {
  rm -f "$work/stop"
  "${probe_nice[@]}" python3 tests/bench/stall_probe.py 17412 "$work/stop" "$@" &
  local probe=$!
  local started=$SECONDS
  # redis-benchmark stops at the first error reply: show it, and go on.
  nice -n "${LOAD_NICE:-0}" redis-benchmark -p 17412 -t set -n "$values" -d "$size" -c 50 -r 1000000 -q >"$work/benchmark.out" 2>&1 || true
  tr '\r' '\n' <"$work/benchmark.out" | grep -v '^$' | tail -n 1
  touch "$work/stop"
  wait "$probe"
  echo "load took $((SECONDS - started)) s"
  curl -s http://127.0.0.1:17411/metrics | grep -E '^keel_storage_(flushes|compactions)_total' || true
  # What held node 1's event loop: slow turns by what woke it, and the
  # longest turns of the last minute or two.
  curl -s http://127.0.0.1:17411/metrics \
    | grep -E '^keel_event_loop_(slow_turns_total|turn_duration_seconds\{.*quantile="0.999")' || true
}

echo "== one node, --fsync always, N=1: $values SETs of $size bytes at c=50, GETs at c=10 =="
start_node 1 1
wait_port 17412
load
for pid in "${pids[@]}"; do kill "$pid"; done
wait 2>/dev/null || true
pids=()
rm -rf "$work"/node-*

[ -n "${ONE_NODE_ONLY:-}" ] && exit 0
echo "== three nodes, N=3, the same load on node 1 =="
for id in 1 2 3; do start_node "$id" 3; done
for id in 1 2 3; do wait_port "174${id}2"; done
load 17411 17421 17431
if grep -qE 'ERROR|WARN' "$work/keel.log"; then
  echo "keel's warnings and errors (last 10):"
  grep -E 'ERROR|WARN' "$work/keel.log" | tail -n 10
fi
