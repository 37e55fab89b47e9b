#!/usr/bin/env bash
# CPU profile of a 3-node Conclave cluster under one bench workload (issue 6):
# starts the cluster (data in a temporary folder, ports 17100+i), runs
# `conclave-bench`, records every node with `perf record -g` meanwhile, and writes
# a flamegraph per node plus a one-page summary of where the cycles go.
#
#   bench/profile.sh [workload] [clients] [seconds]     # defaults: put 64 8
#
# Output: bench/results/profile-<UTC time>/{node<i>.svg, summary.txt, bench.txt}.
# Needs `perf` (linux-perf) and `inferno` (`cargo install inferno`).
# Everything it starts is stopped by PID on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
workload=${1:-put}
clients=${2:-64}
seconds=${3:-8}
port=${CONCLAVE_BENCH_PORT:-17100}
command -v perf > /dev/null || { echo "perf is not installed" >&2; exit 1; }
command -v inferno-flamegraph > /dev/null || { echo "run: cargo install inferno" >&2; exit 1; }
cargo build --release --quiet -p conclave -p conclave-bench
out="bench/results/profile-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/conclave-profile.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; done
  rm -rf "$work"
}
trap cleanup EXIT
# config/node*.toml require auth: a fresh secret and key, and an admin token.
export CONCLAVE_CLUSTER_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export CONCLAVE_AUTH_KEYS=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export CONCLAVE_TOKEN=$(target/release/conclave token issue --subject profile --scope admin --ttl 1d)
auth=(-H "authorization: Bearer $CONCLAVE_TOKEN")
for i in 1 2 3; do
  sed -e "s|^data_dir = .*|data_dir = \"$work/node$i\"|" "config/node$i.toml" > "$work/node$i.toml"
  CONCLAVE_BASE_PORT=$port target/release/conclave serve --config "$work/node$i.toml" \
    > "$work/node$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 300); do
  curl -sf "${auth[@]}" -X PUT "http://127.0.0.1:$((port + 1))/v1/kv/_up" -d '{"value":1}' > /dev/null 2>&1 && break
  sleep 0.1
done
leader=$(curl -s "${auth[@]}" "http://127.0.0.1:$((port + 1))/v1/cluster" | sed -E 's/.*"leader_id":([0-9]+).*/\1/')
urls="http://127.0.0.1:$((port + 1)),http://127.0.0.1:$((port + 2)),http://127.0.0.1:$((port + 3))"
perf_pids=()
for i in 1 2 3; do
  perf record -F 999 -g -p "${pids[$((i - 1))]}" -o "$work/node$i.data" -- sleep "$seconds" \
    > /dev/null 2>&1 &
  perf_pids+=($!)
done
target/release/conclave-bench --urls "$urls" --clients "$clients" --duration "$seconds" \
  --workload "$workload" 2> /dev/null | tee "$out/bench.txt"
for pid in "${perf_pids[@]}"; do wait "$pid" || true; done
{
  echo "workload=$workload clients=$clients seconds=$seconds leader=node$leader"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  for i in 1 2 3; do
    role=follower; [ "$i" = "$leader" ] && role=leader
    echo; echo "== node $i ($role): samples by thread kind and by code"
    perf report -i "$work/node$i.data" --no-children --sort comm,dso -g none --stdio 2> /dev/null \
      | grep -v '^#' | grep -v '^$' | head -8 || true
    echo "-- top symbols (self)"
    perf report -i "$work/node$i.data" --no-children --sort sym --stdio -g none 2> /dev/null \
      | grep -v '^#' | grep -v '^$' | head -15 || true
    echo "-- inclusive (children) for the main subsystems"
    perf report -i "$work/node$i.data" --children --sort sym --stdio -g none 2> /dev/null \
      | grep -E 'sync_file_range|fdatasync|fsync|tcp_sendmsg|tcp_recvmsg|futex|schedule$|hyper::|axum::|serde_json|bincode|sled::|openraft::' \
      | head -25 || true
    perf script -i "$work/node$i.data" 2> /dev/null | inferno-collapse-perf \
      | inferno-flamegraph --title "node $i ($role), $workload, $clients clients" > "$out/node$i.svg" || true
  done
} > "$out/summary.txt"
echo "flamegraphs and summary in $out"
