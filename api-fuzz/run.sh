#!/usr/bin/env bash
# API fuzz: schemathesis against one real conclave node with auth on, driven by
# the node's own OpenAPI document (GET /v1/openapi.json, fetched with the token).
# Fails on any 5xx, any response that violates the document (status, content type,
# schema), and on any operation that never answered 2xx (api-fuzz/check_report.py;
# api-fuzz/hooks.py adds one valid case per operation). Time-boxed by a fixed
# example count per operation.
#   api-fuzz/run.sh                   # CONCLAVE_FUZZ_EXAMPLES=25, a random seed
#   CONCLAVE_FUZZ_SEED=7 api-fuzz/run.sh   # reproduce a run
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CONCLAVE_VENV:-.venv}
examples=${CONCLAVE_FUZZ_EXAMPLES:-25}
seed=${CONCLAVE_FUZZ_SEED:-$RANDOM$RANDOM}
api-fuzz/setup.sh "$venv"
# The same features as the workspace test build, so this reuses its binary.
cargo build --quiet -p conclave --features test-switches
bin=$PWD/target/debug/conclave

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
read -r port raft_port < <(python3 -c '
import socket
sockets = [socket.socket() for _ in range(2)]
for s in sockets: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in sockets])')
key=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
cat > "$work/node.toml" <<TOML
node_id = 1
listen_addr = "127.0.0.1:$port"
raft_listen_addr = "127.0.0.1:$raft_port"
data_dir = "$work/data"
initial_members = [1]
[auth]
keys = ["$key"]
required = true
[debug]
clock_offset_endpoint = true
# Random wait_ms values on reads that wait for a change (a 2PC list, a proposal)
# would otherwise hold a worker up to 60 s each; past this they are 400 invalid_wait.
[limits]
max_wait_ms = 1000
TOML
"$bin" serve --config "$work/node.toml" > "$work/node.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 300); do
  curl -fs "$url/ready" > /dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/node.log"; exit 1; }
  sleep 0.1
done
token=$(CONCLAVE_AUTH_KEYS=$key "$bin" token issue --subject schemathesis --scope admin --ttl 1h)
curl -fsS -H "Authorization: Bearer $token" "$url/v1/openapi.json" > "$work/openapi.json"

echo "schemathesis: $examples examples per operation, seed $seed (CONCLAVE_FUZZ_SEED=$seed to reproduce)"
rc=0
CONCLAVE_URL=$url CONCLAVE_TOKEN=$token PYTHONPATH=api-fuzz SCHEMATHESIS_HOOKS=hooks \
  "$venv/bin/schemathesis" run "$work/openapi.json" --url "$url" \
  -H "Authorization: Bearer $token" \
  --phases examples,fuzzing,stateful \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" --seed "$seed" --no-shrink --workers 2 --request-timeout 60 \
  --report ndjson --report-ndjson-path "$work/report.ndjson" || rc=$?
"$venv/bin/python" api-fuzz/check_report.py "$work/openapi.json" "$work/report.ndjson" || rc=1
if ! kill -0 "$pid" 2>/dev/null; then
  echo "FAIL: the node died during the run"; rc=1
fi
if grep -q "panicked" "$work/node.log"; then
  echo "FAIL: the node logged a panic:"; grep -A5 "panicked" "$work/node.log" | head -40; rc=1
fi
[ "$rc" = 0 ] || tail -50 "$work/node.log"
exit "$rc"
