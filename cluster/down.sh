#!/usr/bin/env bash
# Stops the nodes started by cluster/up.sh, by the PIDs it recorded. Data stays in
# cluster/run/ (delete that folder for a fresh cluster).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run="$root/cluster/run"
shopt -s nullglob
for pidfile in "$run"/node*.pid; do
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "stopped $(basename "$pidfile" .pid) (pid $pid)"
  fi
  rm -f "$pidfile"
done
