#!/usr/bin/env bash
# Chaos harness entry point: builds conclave and the harness once, then runs the
# requested cell or tier. Exit status 0 only when every checker passed.
# conclave is built with the `test-switches` feature (planted bugs, the clock-jump
# endpoint); a plain `cargo build --release` binary in target/release never has them.
#   jepsen-like/run.sh --smoke
#   jepsen-like/run.sh --workload register --nemesis kill --duration 60 --seed 42
#   jepsen-like/run.sh --nemesis pause --inject-bug stale-reads   # must FAIL
#
# The smoke tier runs the binaries `cargo test --workspace` builds (target/debug:
# dependencies optimized, our crates not, test-switches on through jepsen-like's
# dev-dependency), so CI's chaos stage reuses the test stage's build instead of a
# second cold one. Named cells and long runs use an optimized build in its own
# target directory (target/chaos). docs/testing.md, "CI time".
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=false
for arg in "$@"; do
  [[ $arg == --smoke ]] && smoke=true
done
if $smoke; then
  # A no-op after `cargo test --workspace`; it also links target/debug/{conclave,jepsen-like}
  # back to that build's units if another build replaced them.
  cargo test --workspace --no-run --quiet
  bin=target/debug
else
  cargo build --release --quiet --target-dir target/chaos -p conclave -p jepsen-like --features conclave/test-switches
  bin=target/chaos/release
fi
exec "$bin/jepsen-like" --binary "$bin/conclave" "$@"
