#!/usr/bin/env bash
# Starts an N-node Conclave cluster on loopback (default 3) in the background and
# returns once a leader serves writes. Data, logs and pid files go to cluster/run/.
# Node i listens on 127.0.0.1:(CONCLAVE_BASE_PORT + i), base 7000 by default.
# Stop it with cluster/down.sh. The nodes share this host's cores, so each runs one
# tokio worker thread (TOKIO_WORKER_THREADS, default 1 here; docs/operations.md).
# Auth is on: the first start of a cluster generates its cluster secret, cluster id
# and token key into cluster/run/secrets.env (kept across restarts; delete cluster/run for a
# fresh cluster) and an admin token into cluster/run/admin.token:
#   curl -H "authorization: Bearer $(cat cluster/run/admin.token)" localhost:7001/v1/cluster
set -euo pipefail
nodes=${1:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
base=${CONCLAVE_BASE_PORT:-7000}
run=cluster/run
mkdir -p "$run"

cargo build --release --quiet --bin conclave
binary=target/release/conclave

# One secret and one token key per cluster, never a shared well-known one.
secrets="$run/secrets.env"
if [ ! -f "$secrets" ]; then
  fresh() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
  (umask 077; {
    echo "CONCLAVE_CLUSTER_SECRET=$(fresh 24)"
    echo "CONCLAVE_AUTH_KEYS=$(fresh 32)"
    echo "CONCLAVE_CLUSTER_ID=local-$(fresh 6)"
  } > "$secrets")
fi
set -a; . "$secrets"; set +a
(umask 077; "$binary" token issue --subject admin --scope admin --ttl 30d > "$run/admin.token")
auth=(-H "authorization: Bearer $(cat "$run/admin.token")")

for i in $(seq 1 "$nodes"); do
  pidfile="$run/node$i.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "node $i is already running (pid $(cat "$pidfile")); run cluster/down.sh first" >&2
    exit 1
  fi
  config=config/node$i.toml
  if [ "$nodes" != 3 ]; then
    # Other sizes get generated configs with the same settings as config/node1.toml.
    config="$run/node$i.toml"
    members=$(seq -s, 1 "$nodes")
    sed -e "s/^node_id = .*/node_id = $i/" \
        -e "s|^data_dir = .*|data_dir = \"$run/node$i\"|" \
        -e "s/^initial_members = .*/initial_members = [$members]/" \
        config/node1.toml > "$config"
  fi
  CONCLAVE_BASE_PORT=$base TOKIO_WORKER_THREADS=${TOKIO_WORKER_THREADS:-1} nohup "$binary" serve --config "$config" > "$run/node$i.log" 2>&1 &
  echo $! > "$pidfile"
  echo "node $i: pid $(cat "$pidfile"), http://127.0.0.1:$((base + i)), log $run/node$i.log"
done

# Wait (up to 60 s) until a write through node 1 is acknowledged.
for _ in $(seq 1 600); do
  if curl -sf "${auth[@]}" -X PUT "http://127.0.0.1:$((base + 1))/v1/kv/_cluster_up" -d '{"value": true}' > /dev/null 2>&1; then
    leader=$(curl -s "${auth[@]}" "http://127.0.0.1:$((base + 1))/v1/cluster" | sed -n 's/.*"leader_id":\([0-9]*\).*/\1/p')
    echo "cluster of $nodes is up; leader is node $leader; admin token in $run/admin.token"
    exit 0
  fi
  sleep 0.1
done
echo "no leader served a write within 60 s; see $run/node*.log" >&2
exit 1
