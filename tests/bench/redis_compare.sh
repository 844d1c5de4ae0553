#!/usr/bin/env bash
# keel against redis-server with redis-benchmark, in one run on one machine.
#
#   tests/bench/redis_compare.sh [requests] [clients] [value bytes] [rounds]
#
# Prints requests per second for SET and GET, and the ratio keel/redis, at matching durability:
#   1. one keel node (--fsync always)    vs redis-server, AOF with appendfsync always: a write is
#      acknowledged only once it is fsynced;
#   2. one keel node (--fsync periodic)  vs redis-server, AOF with appendfsync everysec: fsync
#      once a second, a machine crash may lose that second;
#   3. one keel node (--fsync periodic)  vs redis-server on its defaults (RDB snapshots only);
#   4. a 3-node keel cluster, N=3, quorum reads and writes, --fsync always
#      vs redis-server with appendfsync always.
# Each comparison alternates keel and redis for a few rounds and prints the medians: a shared
# machine is noisy, and alternating spreads the noise over both.
# With two CPUs or more, the servers (keel and redis alike) share all CPUs but the last, and
# redis-benchmark gets the last one to itself: left to the scheduler, client and server share a
# CPU for part of some runs and not others, and that noise swamps the difference between servers.
# PIN=0 leaves placement to the scheduler.
# A failed run counts as 0 requests/s, and its error is printed.
# Installs redis-server and redis-tools if missing, builds keel in release mode.
set -euo pipefail
cd "$(dirname "$0")/../.."

requests=${1:-200000}
clients=${2:-50}
size=${3:-100}
rounds=${4:-3}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
cargo build --release -q -p keel
keel=target/release/keel

cpus=$(nproc)
server_cpus=() client_cpus=()
if [ "${PIN:-1}" != 0 ] && [ "$cpus" -ge 2 ] && command -v taskset >/dev/null; then
  server_cpus=(taskset -c "$([ "$cpus" = 2 ] && echo 0 || echo "0-$((cpus - 2))")")
  client_cpus=(taskset -c "$((cpus - 1))")
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -s "$work/keel.log" ]; then echo "keel's warnings and errors:"; tail -n 20 "$work/keel.log"; fi
  rm -rf "$work"
}
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do redis-cli -p "$1" PING >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "port $1 never answered" >&2; exit 1; }

# requests/s for one command, from redis-benchmark's CSV output; 0, with the error on stderr,
# if the run failed (redis-benchmark stops at the first error reply).
rps() {
  local port=$1 command=$2 out rate
  out=$("${client_cpus[@]}" redis-benchmark -p "$port" -t "$command" -n "$requests" -c "$clients" -d "$size" -r 100000 --csv -q 2>&1) || true
  rate=$(awk -F'"' -v cmd="${command^^}" '$2 == cmd { print $4 }' <<<"$out")
  if [ -z "$rate" ]; then
    echo "${command^^} against port $port failed: $(grep -v '^"' <<<"$out" | head -3)" >&2
    rate=0
  fi
  echo "$rate"
}

start_redis() { # port, extra args…
  local port=$1; shift
  "${server_cpus[@]}" redis-server --port "$port" --dir "$work" --dbfilename "dump-$port.rdb" --appendfilename "aof-$port" \
    "$@" --daemonize no >"$work/redis-$port.log" 2>&1 &
  pids+=($!); wait_port "$port"
}

start_keel() { # node id, base port, peers, replicas, fsync policy
  local id=$1 base=$2 peers=$3 replicas=$4 fsync=$5
  "${server_cpus[@]}" "$keel" node --node "$id" --cluster bench --replicas "$replicas" --fsync "$fsync" --data-dir "$work/keel-$base" \
    --listen-peer "127.0.0.1:$((base + 10))" --listen-http "127.0.0.1:$((base + 20))" \
    --listen-redis "127.0.0.1:$((base + 21))" --peer "$peers" --log warn 2>>"$work/keel.log" &
  pids+=($!)
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

report() { # label, keel port, redis port
  local label=$1 keel_port=$2 redis_port=$3
  for command in set get; do
    local ks=() rs=() ratios=() k r
    for _ in $(seq "$rounds"); do
      k=$(rps "$keel_port" "$command"); r=$(rps "$redis_port" "$command")
      ks+=("$k"); rs+=("$r"); ratios+=("$(echo "if ($r > 0) $k / $r else 0" | bc -l)")
    done
    printf '%-62s %-3s  keel %10.0f req/s   redis %10.0f req/s   ratio %s keel/redis=%.2f (median of %s per-round ratios)\n' \
      "$label" "${command^^}" "$(printf '%s\n' "${ks[@]}" | median)" "$(printf '%s\n' "${rs[@]}" | median)" \
      "$command" "$(printf '%s\n' "${ratios[@]}" | median)" "$rounds"
    # Every round, so that a median carried by noise shows.
    printf '    rounds keel/redis:'
    for i in "${!ks[@]}"; do printf ' %.0f/%.0f' "${ks[$i]}" "${rs[$i]}"; done
    printf '\n'
  done
}

echo "redis-benchmark -n $requests -c $clients -d $size, keyspace 100000"
if [ ${#client_cpus[@]} -gt 0 ]; then
  echo "servers on CPU ${server_cpus[2]}, redis-benchmark on CPU ${client_cpus[2]}"
else
  echo "no CPU pinning"
fi
start_redis 16379 --appendonly yes --appendfsync always --save ''
start_redis 16380 --appendonly yes --appendfsync everysec --save ''
start_redis 16381
start_keel 1 18000 "1@127.0.0.1:18010" 1 always
start_keel 1 18100 "1@127.0.0.1:18110" 1 periodic
wait_port 18021; wait_port 18121
report "one node, fsync always    vs redis, AOF fsync always" 18021 16379
report "one node, fsync periodic  vs redis, AOF fsync everysec" 18121 16380
report "one node, fsync periodic  vs redis, defaults (RDB)" 18121 16381

peers="1@127.0.0.1:19010,2@127.0.0.1:19110,3@127.0.0.1:19210"
for i in 1 2 3; do start_keel "$i" $((19000 + 100 * (i - 1))) "$peers" 3 always; done
for i in 1 2 3; do wait_port $((19021 + 100 * (i - 1))); done
sleep 1
report "3 nodes, N=3, quorum, fsync always  vs redis, AOF fsync always" 19021 16379
