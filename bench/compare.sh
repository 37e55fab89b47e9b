#!/usr/bin/env bash
# Conclave and etcd side by side on this machine (issue 6).
#
# Builds the release binaries, starts a 3-node Conclave cluster and a 3-member etcd
# cluster on loopback (data in a temporary folder), and runs the same closed-loop
# generator (bench/, `conclave-bench`) against both: for each workload and client
# count, ROUNDS rounds of "Conclave, then etcd". Then Conclave-only rows (task cycle,
# the mixed agent workload, 10,000 keepalive sessions), a leader-kill failover on
# both, and last, on a fresh Conclave cluster (etcd stopped), the memory footprint
# of 100,000 queued tasks and 10,000 sessions (it leaves that data behind). On request
# (WATCH_FANOUT=1) also the watch fan-out of issue #13, Conclave only. Results go to
# bench/results/<UTC timestamp>/: results.jsonl (one line per run), runs.log,
# progress.log, machine.md, table.md (medians) and chart.svg.
# Everything it starts is stopped by PID on exit.
#
# Settings (environment):
#   ROUNDS=3            rounds per (workload, clients, system)
#   DURATION=5          seconds per run
#   CLIENTS="1 16 64 256"
#   WORKLOADS="put get lock"        side-by-side workloads
#   PLACEMENT=spread    spread: clients round-robin over all 3 nodes (followers
#                       forward to the leader), both systems; leader: all to the leader
#   ETCD_CLIENTS_PER_CONNECTION=8  etcd clients sharing one HTTP/2 connection
#   ONLY_CONCLAVE_ROWS=1  0 skips task-cycle/task-cycle-next/mixed/keepalive (each
#                       round runs task-cycle, submit → claim → complete, then
#                       task-cycle-next, submit → complete with claim_next: an A/B)
#   FOOTPRINT=1          0 skips the footprint run (64 clients, on a fresh Conclave
#                       cluster, once; about 30 s)
#   FOOTPRINT_SESSIONS=10000 FOOTPRINT_TASKS=100000  what the footprint run stores
#   FAILOVER_ROUNDS=$ROUNDS  0 skips the failover measurement
#   WATCH_FANOUT=0       1 adds the watch fan-out (#13; Conclave only, as the bench has no
#                       etcd watch client), after the failover rows with etcd (and a
#                       baseline) stopped: WATCH_WATCHERS streams of GET /v1/watch
#                       round-robin over the 3 nodes while WATCH_CLIENTS writers put
#                       under their prefix for WATCH_DURATION s, WATCH_ROUNDS times.
#                       Reports events delivered/s, delivery lag p50/p99/max, missing
#                       and duplicate deliveries (errors) and each node's CPU
#   WATCH_WATCHERS=100 WATCH_CLIENTS=64 WATCH_DURATION=20 WATCH_ROUNDS=1
#   STEADY=0            1 adds the steady-load step (#16) after the side-by-side rows:
#                       put at each of STEADY_CLIENTS for STEADY_DURATION s on each
#                       system, with each system's Raft term and leader read before
#                       and after; steady.md reports leader changes, term changes
#                       and errors by kind (a 503 no_leader is a leader lost)
#   STEADY_CLIENTS="256 1024" STEADY_DURATION=60
#   NODE_WORKER_THREADS=  N sets TOKIO_WORKER_THREADS=N for every Conclave node only
#                       (not the generator); unset: tokio's default, one per core
#   SCALE_TASKS=        e.g. "1000 100000 900000": the scale step (#16) after everything
#                       else, Conclave only, a fresh cluster per N: N queued tasks and
#                       SCALE_SESSIONS sessions stored, then task-cycle at SCALE_CLIENTS,
#                       a snapshot on each node, a follower restarted, a node added;
#                       scale.md. Alone: ETCD=0 WORKLOADS="" ONLY_CONCLAVE_ROWS=0
#                       FAILOVER_ROUNDS=0 FOOTPRINT=0 SCALE_TASKS="1000 100000 900000"
#   SCALE_SESSIONS=10000 SCALE_CLIENTS=64
#   KEEP_LOGS=0         1 copies every node's log into the results folder's logs/ at exit
#                       (to read what happened around a term change)
#   ETCD=1              0: no etcd at all (neither installed nor started): side-by-side
#                       workloads and failover run on Conclave alone. A watch fan-out
#                       on its own: ETCD=0 WORKLOADS="" ONLY_CONCLAVE_ROWS=0
#                       FAILOVER_ROUNDS=0 FOOTPRINT=0 WATCH_FANOUT=1 bench/compare.sh
#   CONCLAVE_BENCH_PORT=17100  Conclave node i on 127.0.0.1:(port + i), its peer listener on (port + 1000 + i)
#   ETCD_BENCH_PORT=17200      etcd member i: client port + i, peer port + 10 + i
#   BASELINE=<git rev>  A/B against an earlier Conclave in the same run: that revision
#                       is checked out (git worktree) and built into
#                       target/baseline/<rev>, a third cluster of it is started on
#                       CONCLAVE_BENCH_PORT + 20 + i, and every side-by-side round runs
#                       "conclave-baseline, conclave, etcd"; its rows are labelled
#                       system "conclave-baseline" in results.jsonl and table.md
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS-"1 16 64 256"}
WORKLOADS=${WORKLOADS-"put get lock"}
PLACEMENT=${PLACEMENT:-spread}
ETCD_CLIENTS_PER_CONNECTION=${ETCD_CLIENTS_PER_CONNECTION:-8}
ONLY_CONCLAVE_ROWS=${ONLY_CONCLAVE_ROWS:-1}
FOOTPRINT=${FOOTPRINT:-1}
FOOTPRINT_SESSIONS=${FOOTPRINT_SESSIONS:-10000}
FOOTPRINT_TASKS=${FOOTPRINT_TASKS:-100000}
FAILOVER_ROUNDS=${FAILOVER_ROUNDS:-$ROUNDS}
WATCH_FANOUT=${WATCH_FANOUT:-0}
WATCH_WATCHERS=${WATCH_WATCHERS:-100}
WATCH_CLIENTS=${WATCH_CLIENTS:-64}
WATCH_DURATION=${WATCH_DURATION:-20}
WATCH_ROUNDS=${WATCH_ROUNDS:-1}
STEADY=${STEADY:-0}
STEADY_CLIENTS=${STEADY_CLIENTS-"256 1024"}
STEADY_DURATION=${STEADY_DURATION:-60}
KEEP_LOGS=${KEEP_LOGS:-0}
SCALE_TASKS=${SCALE_TASKS-}
SCALE_SESSIONS=${SCALE_SESSIONS:-10000}
SCALE_CLIENTS=${SCALE_CLIENTS:-64}
ETCD=${ETCD:-1}
conclave_port=${CONCLAVE_BENCH_PORT:-17100}
etcd_port=${ETCD_BENCH_PORT:-17200}
BASELINE=${BASELINE:-}
baseline_port=$((conclave_port + 20))

started_at=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
out="bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/conclave-bench.XXXXXX")
declare -A pid_of=()

stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  return 0
}

cleanup() {
  local name
  for name in "${!pid_of[@]}"; do stop_pid "${pid_of[$name]}"; done
  [ -z "${baseline_tree:-}" ] || git -C "$root" worktree remove --force "$baseline_tree" > /dev/null 2>&1 || true
  if [ "$KEEP_LOGS" = 1 ]; then
    mkdir -p "$out/logs" && cp "$work"/*.log "$out/logs/" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" | tee -a "$out/runs.log" >&2; }

ensure_etcd() {
  command -v etcd > /dev/null && return 0
  log "etcd is not installed: installing Debian's etcd-server"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # policy-rc.d in containers (or systemd) may start a packaged etcd; ours use other ports.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server > /dev/null
  command -v etcd > /dev/null || { echo "could not install etcd" >&2; exit 1; }
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_conclave() {
  local i=$1
  local config="$work/conclave-node$i.toml"
  sed -e "s|^data_dir = .*|data_dir = \"$work/conclave-node$i\"|" "config/node$i.toml" > "$config"
  env ${NODE_WORKER_THREADS:+TOKIO_WORKER_THREADS=$NODE_WORKER_THREADS} \
    CONCLAVE_BASE_PORT=$conclave_port "$bin/conclave" serve --config "$config" \
    >> "$work/conclave-node$i.log" 2>&1 &
  pid_of[conclave$i]=$!
  disown
}

# The BASELINE revision's node i, with that revision's own config file.
start_baseline() {
  local i=$1
  local config="$work/conclave-baseline-node$i.toml"
  sed -e "s|^data_dir = .*|data_dir = \"$work/conclave-baseline-node$i\"|" \
    "$baseline_tree/config/node$i.toml" > "$config"
  env ${NODE_WORKER_THREADS:+TOKIO_WORKER_THREADS=$NODE_WORKER_THREADS} \
    CONCLAVE_BASE_PORT=$baseline_port "$baseline_bin/conclave" serve --config "$config" \
    >> "$work/conclave-baseline-node$i.log" 2>&1 &
  pid_of[conclave-baseline$i]=$!
  disown
}

etcd_cluster() {
  local i list=""
  for i in 1 2 3; do list+="${list:+,}m$i=http://127.0.0.1:$((etcd_port + 10 + i))"; done
  echo "$list"
}

# etcd: election timeout 300 ms (it randomizes in [300, 600) ms), heartbeat 60 ms
# (it requires at most a fifth of the election timeout). Conclave's
# config/node*.toml: heartbeat 100 ms, election [150, 300) ms plus openraft's
# leader lease (= the 300 ms maximum), i.e. a follower campaigns 450–600 ms after
# the last heartbeat — the same window as etcd's.
start_etcd() {
  local i=$1
  etcd --name "m$i" --data-dir "$work/etcd-m$i" \
    --listen-client-urls "http://127.0.0.1:$((etcd_port + i))" \
    --advertise-client-urls "http://127.0.0.1:$((etcd_port + i))" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 10 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 10 + i))" \
    --initial-cluster "$(etcd_cluster)" --initial-cluster-state new \
    --initial-cluster-token conclave-bench \
    --heartbeat-interval 60 --election-timeout 300 \
    --logger zap --log-outputs stderr \
    >> "$work/etcd-m$i.log" 2>&1 &
  pid_of[etcd$i]=$!
  disown
}

# Waits (60 s at most) until a write through node/member $2 of system $1 succeeds.
wait_writable() {
  local system=$1 i=$2
  for _ in $(seq 1 600); do
    kill -0 "${pid_of[$system$i]}" 2>/dev/null || break
    if [ "$system" = conclave ] || [ "$system" = conclave-baseline ]; then
      local port=$conclave_port
      [ "$system" = conclave ] || port=$baseline_port
      curl -sf -H "authorization: Bearer $CONCLAVE_TOKEN" \
        -X PUT "http://127.0.0.1:$((port + i))/v1/kv/_bench_up" \
        -d '{"value": true}' > /dev/null 2>&1 && return 0
    else
      # etcd's JSON gateway: key "_up", value "1", base64.
      curl -sf "http://127.0.0.1:$((etcd_port + i))/v3/kv/put" \
        -d '{"key": "X3Vw", "value": "MQ=="}' > /dev/null 2>&1 && return 0
    fi
    sleep 0.1
  done
  echo "$system node $i exited or never accepted a write; the end of its log:" >&2
  tail -20 "$work/$system"*"$i.log" >&2 || true
  exit 1
}

pids_of() { echo "${pid_of[${1}1]},${pid_of[${1}2]},${pid_of[${1}3]}"; }

bench() {
  local system=$1; shift
  local nodes
  if [ "$system" = conclave-baseline ]; then
    # Same generator, the baseline's ports; its result lines are relabelled below.
    nodes=(--urls "http://127.0.0.1:$((baseline_port + 1)),http://127.0.0.1:$((baseline_port + 2)),http://127.0.0.1:$((baseline_port + 3))")
    "$bin/conclave-bench" --target conclave "${nodes[@]}" --pids "$(pids_of "$system")" \
      --json "$work/baseline.jsonl" "$@" 2>> "$out/progress.log" | tee -a "$out/runs.log"
    sed -e 's/"system":"conclave"/"system":"conclave-baseline"/' "$work/baseline.jsonl" >> "$out/results.jsonl"
    rm -f "$work/baseline.jsonl"
    return 0
  fi
  if [ "$system" = conclave ]; then
    nodes=(--urls "http://127.0.0.1:$((conclave_port + 1)),http://127.0.0.1:$((conclave_port + 2)),http://127.0.0.1:$((conclave_port + 3))")
  else
    nodes=(--endpoints "http://127.0.0.1:$((etcd_port + 1)),http://127.0.0.1:$((etcd_port + 2)),http://127.0.0.1:$((etcd_port + 3))"
      --clients-per-connection "$ETCD_CLIENTS_PER_CONNECTION")
  fi
  "$bin/conclave-bench" --target "$system" "${nodes[@]}" --pids "$(pids_of "$system")" \
    --json "$out/results.jsonl" "$@" 2>> "$out/progress.log" | tee -a "$out/runs.log"
}

ports="$((conclave_port + 1)) $((conclave_port + 2)) $((conclave_port + 3))
  $((conclave_port + 1001)) $((conclave_port + 1002)) $((conclave_port + 1003))"
if [ "$ETCD" = 1 ]; then
  ensure_etcd
  ports+=" $((etcd_port + 1)) $((etcd_port + 2)) $((etcd_port + 3))
    $((etcd_port + 11)) $((etcd_port + 12)) $((etcd_port + 13))"
fi
for port in $ports; do
  port_free "$port" || { echo "port $port is in use; set CONCLAVE_BENCH_PORT / ETCD_BENCH_PORT" >&2; exit 1; }
done

log "building release binaries"
cargo build --release --quiet -p conclave -p conclave-bench
bin="${CARGO_TARGET_DIR:-$root/target}/release"
# Auth is required by config/node*.toml: a fresh cluster secret and token key for
# this run, and an admin token the bench clients send (CONCLAVE_TOKEN).
export CONCLAVE_CLUSTER_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export CONCLAVE_AUTH_KEYS=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export CONCLAVE_TOKEN=$("$bin/conclave" token issue --subject bench --scope admin --ttl 1d)

systems="conclave etcd"
[ "$ETCD" = 1 ] || systems="conclave"
if [ -n "$BASELINE" ]; then
  baseline_rev=$(git rev-parse --short "$BASELINE")
  baseline_tree="$work/baseline-tree"
  baseline_target="$root/target/baseline/$baseline_rev"
  for port in $((baseline_port + 1)) $((baseline_port + 2)) $((baseline_port + 3)); do
    port_free "$port" || { echo "port $port is in use; set CONCLAVE_BENCH_PORT" >&2; exit 1; }
  done
  log "building the baseline $baseline_rev into $baseline_target"
  git worktree add --detach --force "$baseline_tree" "$baseline_rev" > /dev/null 2>&1
  (cd "$baseline_tree" && CARGO_TARGET_DIR="$baseline_target" cargo build --release --quiet -p conclave)
  baseline_bin="$baseline_target/release"
  for i in 1 2 3; do start_baseline "$i"; done
  for i in 1 2 3; do wait_writable conclave-baseline "$i"; done
  systems="conclave-baseline $systems"
fi

for i in 1 2 3; do
  start_conclave "$i"
  if [ "$ETCD" = 1 ]; then start_etcd "$i"; fi
done
for i in 1 2 3; do
  wait_writable conclave "$i"
  if [ "$ETCD" = 1 ]; then wait_writable etcd "$i"; fi
done
log "clusters up: conclave pids $(pids_of conclave)$([ "$ETCD" = 1 ] && echo ", etcd pids $(pids_of etcd)")${BASELINE:+, conclave-baseline ($baseline_rev) pids $(pids_of conclave-baseline)}"

{
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- CPU: $(nproc) × $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
  echo "- memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "- disk (data dirs): $(df -hT "$work" | awk 'NR == 2 {print $1, $2, $3}')"
  echo "- kernel: $(uname -r)"
  if [ "$ETCD" = 1 ]; then
    echo "- etcd: $(etcd --version | head -1 | sed 's/etcd Version: //') (Debian etcd-server), gRPC API"
  else
    echo "- etcd: not run (ETCD=0)"
  fi
  echo "- conclave: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' + uncommitted changes'), release build"
  [ -z "$BASELINE" ] || echo "- conclave-baseline: $baseline_rev, release build, same settings, ports $((baseline_port + 1))-$((baseline_port + 3))"
  echo "- load average before the run (1/5/15 min): $load_before"
  echo "- settings: ROUNDS=$ROUNDS DURATION=$DURATION CLIENTS=\"$CLIENTS\" WORKLOADS=\"$WORKLOADS\" PLACEMENT=$PLACEMENT ETCD_CLIENTS_PER_CONNECTION=$ETCD_CLIENTS_PER_CONNECTION ONLY_CONCLAVE_ROWS=$ONLY_CONCLAVE_ROWS FOOTPRINT=$FOOTPRINT FOOTPRINT_SESSIONS=$FOOTPRINT_SESSIONS FOOTPRINT_TASKS=$FOOTPRINT_TASKS WATCH_FANOUT=$WATCH_FANOUT WATCH_WATCHERS=$WATCH_WATCHERS WATCH_CLIENTS=$WATCH_CLIENTS WATCH_DURATION=$WATCH_DURATION WATCH_ROUNDS=$WATCH_ROUNDS ETCD=$ETCD NODE_WORKER_THREADS=${NODE_WORKER_THREADS:-default}"
} > "$out/machine.md"

for workload in $WORKLOADS; do
  for clients in $CLIENTS; do
    for round in $(seq 1 "$ROUNDS"); do
      for system in $systems; do
        log "$workload clients=$clients round $round/$ROUNDS: $system"
        bench "$system" --workload "$workload" --clients "$clients" --duration "$DURATION" \
          --placement "$PLACEMENT"
      done
    done
  done
done

# "term leader" of a system as member/node 1 sees it (etcd's leader is a member id).
raft_term() {
  if [ "$1" = etcd ]; then
    curl -s "http://127.0.0.1:$((etcd_port + 1))/v3/maintenance/status" -d '{}' |
      python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["header"]["raft_term"], s["leader"])'
  else
    curl -s -H "authorization: Bearer $CONCLAVE_TOKEN" "http://127.0.0.1:$((conclave_port + 1))/v1/cluster" |
      python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["term"], s["leader_id"])'
  fi
}

if [ "$STEADY" = 1 ]; then
  {
    echo "| system | clients | seconds | ops/s | p99 ms | term before → after | leader before → after | errors | error kinds |"
    echo "|---|---|---|---|---|---|---|---|---|"
  } > "$out/steady.md"
  for clients in $STEADY_CLIENTS; do
    for system in $systems; do
      [ "$system" != conclave-baseline ] || continue
      log "steady put clients=$clients ${STEADY_DURATION}s: $system"
      read -r term_before leader_before < <(raft_term "$system")
      bench "$system" --workload put --clients "$clients" --duration "$STEADY_DURATION" \
        --placement "$PLACEMENT"
      read -r term_after leader_after < <(raft_term "$system")
      tail -1 "$out/results.jsonl" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
system, clients, seconds, tb, ta, lb, la = sys.argv[1:]
kinds = ", ".join(f"{k}: {v}" for k, v in sorted(r.get("error_kinds", {}).items())) or "-"
rate, p99, errors = r["ops_per_sec"], r["p99_us"] / 1000, r["errors"]
print(f"| {system} | {clients} | {seconds} | {rate:.0f} | {p99:.1f} | {tb} → {ta} | {lb} → {la} | {errors} | {kinds} |")
' "$system" "$clients" "$STEADY_DURATION" "$term_before" "$term_after" "$leader_before" "$leader_after" >> "$out/steady.md"
    done
  done
  cat "$out/steady.md" | tee -a "$out/runs.log"
fi

if [ "$ONLY_CONCLAVE_ROWS" = 1 ]; then
  for clients in $CLIENTS; do
    for round in $(seq 1 "$ROUNDS"); do
      log "task-cycle clients=$clients round $round/$ROUNDS: conclave"
      bench conclave --workload task-cycle --clients "$clients" --duration "$DURATION" \
        --placement "$PLACEMENT"
      log "task-cycle-next clients=$clients round $round/$ROUNDS: conclave"
      bench conclave --workload task-cycle-next --clients "$clients" --duration "$DURATION" \
        --placement "$PLACEMENT"
    done
  done
  for clients in $CLIENTS; do
    for round in $(seq 1 "$ROUNDS"); do
      log "mixed clients=$clients round $round/$ROUNDS: conclave"
      bench conclave --workload mixed --clients "$clients" --duration "$DURATION" \
        --placement "$PLACEMENT"
    done
  done
  for round in $(seq 1 "$ROUNDS"); do
    log "keepalive 10000 sessions round $round/$ROUNDS: conclave"
    bench conclave --workload keepalive --sessions 10000 --clients 32 --duration "$DURATION" \
      --placement leader
  done
fi

failover_systems="conclave etcd"
[ "$ETCD" = 1 ] || failover_systems="conclave"
for round in $(seq 1 "$FAILOVER_ROUNDS"); do
  for system in $failover_systems; do
    log "failover round $round/$FAILOVER_ROUNDS: $system"
    bench "$system" --workload failover
    killed=$(tail -1 "$out/results.jsonl" | sed -n 's/.*"killed_node":\([0-9]*\).*/\1/p')
    [ -n "$killed" ] || { echo "failover run did not say which node it killed" >&2; exit 1; }
    for _ in $(seq 1 100); do kill -0 "${pid_of[$system$killed]}" 2>/dev/null || break; sleep 0.05; done
    if [ "$system" = conclave ]; then start_conclave "$killed"; else start_etcd "$killed"; fi
    wait_writable "$system" "$killed"
    # The restarted node must be caught up and see a leader before the next kill.
    sleep 2
  done
done

# The watch fan-out (#13), Conclave only; etcd and a baseline are done with by now
# and stopped so that they take no CPU from it (the failover rows have restarted any
# killed node and waited for it).
if [ "$WATCH_FANOUT" = 1 ]; then
  if [ "$ETCD" = 1 ]; then for i in 1 2 3; do stop_pid "${pid_of[etcd$i]}"; done; fi
  if [ -n "$BASELINE" ]; then for i in 1 2 3; do stop_pid "${pid_of[conclave-baseline$i]}"; done; fi
  for round in $(seq 1 "$WATCH_ROUNDS"); do
    log "watch-fanout $WATCH_WATCHERS watchers, $WATCH_CLIENTS writers, ${WATCH_DURATION} s, round $round/$WATCH_ROUNDS: conclave"
    bench conclave --workload watch-fanout --watchers "$WATCH_WATCHERS" --clients "$WATCH_CLIENTS" \
      --duration "$WATCH_DURATION" --placement "$PLACEMENT"
  done
fi

# Last, as it leaves its data behind: a fresh Conclave cluster (empty data dirs), etcd
# stopped, then (by default) 100,000 queued tasks and 10,000 sessions stored; RSS per
# node after.
if [ "$FOOTPRINT" = 1 ]; then
  log "footprint: fresh conclave cluster, etcd stopped"
  for i in 1 2 3; do
    if [ "$ETCD" = 1 ]; then stop_pid "${pid_of[etcd$i]}"; fi
    stop_pid "${pid_of[conclave$i]}"
  done
  if [ -n "$BASELINE" ]; then for i in 1 2 3; do stop_pid "${pid_of[conclave-baseline$i]}"; done; fi
  for i in 1 2 3; do rm -rf "$work/conclave-node$i"; start_conclave "$i"; done
  for i in 1 2 3; do wait_writable conclave "$i"; done
  sleep 2
  log "footprint $FOOTPRINT_SESSIONS sessions + $FOOTPRINT_TASKS tasks, 64 clients: conclave pids $(pids_of conclave)"
  bench conclave --workload footprint --sessions "$FOOTPRINT_SESSIONS" --tasks "$FOOTPRINT_TASKS" --clients 64 \
    --placement "$PLACEMENT"
fi

# The scale step (#16), Conclave only, after everything else (etcd and a baseline
# stopped): for each N of SCALE_TASKS a fresh cluster stores SCALE_SESSIONS sessions and
# N queued tasks (the footprint workload; they require a capability nobody offers, so
# they stay queued), then: task-cycle at SCALE_CLIENTS clients, ROUNDS × DURATION s
# (what a submit, a claim and a completion cost with N stored); a snapshot built on
# each node in turn (POST /v1/cluster/snapshot waits for it); a follower stopped and
# restarted (time until a write through it is answered); and a fourth node added
# (`conclave member add`: the leader sends it the snapshot, it installs it and catches
# up, and is promoted). scale.md has one row per N.
if [ -n "$SCALE_TASKS" ]; then
  if [ "$ETCD" = 1 ]; then for i in 1 2 3; do stop_pid "${pid_of[etcd$i]}"; done; fi
  if [ -n "$BASELINE" ]; then for i in 1 2 3; do stop_pid "${pid_of[conclave-baseline$i]}"; done; fi
  {
    echo "| tasks stored | sessions | store s | RSS MiB per node | task-cycle cycles/s, p50 / p99 ms | snapshot MiB | snapshot build s (nodes 1/2/3) | restart to serving s | add a node (snapshot install + catch-up) s |"
    echo "|---|---|---|---|---|---|---|---|---|"
  } > "$out/scale.md"
  auth=(-H "authorization: Bearer $CONCLAVE_TOKEN")
  # Seconds (two decimals) since $1, a `date +%s%N`.
  seconds_since() { local ms=$(( ($(date +%s%N) - $1) / 1000000 )); printf '%d.%02d' $((ms / 1000)) $((ms % 1000 / 10)); }
  for tasks in $SCALE_TASKS; do
    for i in 1 2 3 4; do [ -z "${pid_of[conclave$i]:-}" ] || stop_pid "${pid_of[conclave$i]}"; done
    unset 'pid_of[conclave4]'
    for i in 1 2 3 4; do rm -rf "$work/conclave-node$i"; done
    for i in 1 2 3; do start_conclave "$i"; done
    for i in 1 2 3; do wait_writable conclave "$i"; done
    log "scale: $SCALE_SESSIONS sessions + $tasks tasks, 64 clients: conclave pids $(pids_of conclave)"
    bench conclave --workload footprint --sessions "$SCALE_SESSIONS" --tasks "$tasks" --clients 64 \
      --placement "$PLACEMENT"
    stored=$(tail -1 "$out/results.jsonl")
    cycles=""
    for round in $(seq 1 "$ROUNDS"); do
      log "scale: task-cycle clients=$SCALE_CLIENTS with $tasks tasks stored, round $round/$ROUNDS"
      bench conclave --workload task-cycle --clients "$SCALE_CLIENTS" --duration "$DURATION" \
        --placement "$PLACEMENT"
      cycles+="$(tail -1 "$out/results.jsonl")"$'\n'
    done
    builds=""
    for i in 1 2 3; do
      log "scale: snapshot on node $i"
      t0=$(date +%s%N)
      curl -sf "${auth[@]}" -X POST "http://127.0.0.1:$((conclave_port + i))/v1/cluster/snapshot" > /dev/null ||
        echo "snapshot on node $i was refused" >&2
      builds+="${builds:+ / }$(seconds_since "$t0")"
    done
    bytes=$(curl -sf "${auth[@]}" "http://127.0.0.1:$((conclave_port + 1))/metrics" |
      sed -n 's/^conclave_raft_snapshot_bytes \([0-9.e+]*\)$/\1/p')
    log "scale: restart node 3"
    stop_pid "${pid_of[conclave3]}"
    t0=$(date +%s%N)
    start_conclave 3
    wait_writable conclave 3
    restart=$(seconds_since "$t0")
    log "scale: add node 4"
    config="$work/conclave-node4.toml"
    sed -e "s|^data_dir = .*|data_dir = \"$work/conclave-node4\"|" config/node4.toml > "$config"
    CONCLAVE_BASE_PORT=$conclave_port "$bin/conclave" serve --config "$config" \
      >> "$work/conclave-node4.log" 2>&1 &
    pid_of[conclave4]=$!
    disown
    for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$((conclave_port + 4))/ready" > /dev/null && break; sleep 0.1; done
    t0=$(date +%s%N)
    "$bin/conclave" member add 4 "127.0.0.1:$((conclave_port + 4))" \
      --raft-addr "127.0.0.1:$((conclave_port + 1004))" --addr "127.0.0.1:$((conclave_port + 1))" \
      --timeout 120s > /dev/null 2>> "$out/progress.log" || echo "adding node 4 failed" >&2
    added=$(seconds_since "$t0")
    printf '%s\n' "$stored" | python3 -c '
import json, statistics, sys
stored = json.loads(sys.stdin.readline())
tasks, sessions, builds, restart, added, bytes_, cycles = sys.argv[1:]
rows = [json.loads(line) for line in cycles.splitlines() if line.strip()]
rate = statistics.median(r["ops_per_sec"] for r in rows)
p50 = statistics.median(r["p50_us"] for r in rows) / 1000
p99 = statistics.median(r["p99_us"] for r in rows) / 1000
rss = " / ".join(str(round(v / 1024)) if v else "gone" for v in stored.get("rss_kib", [])) or "?"
mib = f"{float(bytes_) / 1048576:.1f}" if bytes_ else "?"
secs = stored["applied_s"]
print(f"| {int(tasks):,} | {int(sessions):,} | {secs:.1f} | {rss} | {rate:,.0f}, {p50:.1f} / {p99:.1f} | {mib} | {builds} | {restart} | {added} |")
' "$tasks" "$SCALE_SESSIONS" "$builds" "$restart" "$added" "$bytes" "$cycles" >> "$out/scale.md"
    stop_pid "${pid_of[conclave4]}"
    unset 'pid_of[conclave4]'
  done
  cat "$out/scale.md" | tee -a "$out/runs.log"
fi

"$bin/conclave-bench" summary --input "$out/results.jsonl" > "$out/table.md"
# The chart pairs the systems; there is nothing to pair without etcd.
if [ "$ETCD" = 1 ]; then
  "$bin/conclave-bench" chart --input "$out/results.jsonl" --out "$out/chart.svg" \
    --title "Conclave vs etcd 3.4, 3 nodes each on one $(nproc)-core machine, $PLACEMENT, median of $ROUNDS × ${DURATION} s ($(date -u +%Y-%m-%d))" 2> /dev/null
fi
elapsed=$(( $(date +%s) - started_at ))
echo "- wall time of compare.sh: ${elapsed} s" >> "$out/machine.md"
echo
cat "$out/machine.md"
echo
cat "$out/table.md"
echo
echo "results: $out (table.md, chart.svg, results.jsonl, runs.log)"
