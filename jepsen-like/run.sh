#!/usr/bin/env bash
# Chaos harness entry point: builds conclave and the harness (release) once, then
# runs the requested cell or tier. Exit status 0 only when every checker passed.
#   jepsen-like/run.sh --smoke
#   jepsen-like/run.sh --workload register --nemesis kill --duration 60 --seed 42
#   jepsen-like/run.sh --nemesis pause --inject-bug stale-reads   # must FAIL
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p conclave -p jepsen-like
exec target/release/jepsen-like --binary target/release/conclave "$@"
