#!/usr/bin/env bash
# Chaos harness entry point: builds conclave and the harness (release) once, then
# runs the requested cell or tier. Exit status 0 only when every checker passed.
# conclave is built with the `test-switches` feature (planted bugs, the clock-jump
# endpoint) into its own target directory, so a plain `cargo build --release`
# binary in target/release never has them.
#   jepsen-like/run.sh --smoke
#   jepsen-like/run.sh --workload register --nemesis kill --duration 60 --seed 42
#   jepsen-like/run.sh --nemesis pause --inject-bug stale-reads   # must FAIL
set -euo pipefail
cd "$(dirname "$0")/.."
target=target/chaos
cargo build --release --quiet --target-dir "$target" -p conclave -p jepsen-like --features conclave/test-switches
exec "$target/release/jepsen-like" --binary "$target/release/conclave" "$@"
