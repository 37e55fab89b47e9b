#!/usr/bin/env bash
# Builds the `conclave` binary of the previous format version (the last commit that
# wrote FORMAT_VERSION 7) from this repository's history, for tests/upgrade.rs's
# rolling upgrade. Idempotent: a binary already built from that commit is kept.
#
#   tests/upgrade/build-previous.sh        # prints the binary's path
#
# Needs the git history (a clone, not an exported tree) and the crates registry.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
base="$(cat "$here/tests/upgrade/PREVIOUS")"
out="$here/target/previous"
bin="$out/conclave-$base"
if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi
mkdir -p "$out"
src="$out/src-$base"
rm -rf "$src"
mkdir -p "$src"
git -C "$here" archive "$base" | tar -x -C "$src"
# No debug info and no optimization, dependencies included: the cheapest build of a
# binary that tests/upgrade.rs runs for a few seconds under a light load (this is
# most of the stage's time on a fresh machine; docs/testing.md, "CI time").
CARGO_PROFILE_DEV_DEBUG=0 CARGO_TARGET_DIR="$out/target" \
    cargo build --quiet --manifest-path "$src/Cargo.toml" -p conclave --features test-switches \
    --config 'profile.dev.package."*".opt-level=0' --config 'profile.dev.package."*".debug=false' >&2
cp "$out/target/debug/conclave" "$bin.tmp"
mv "$bin.tmp" "$bin"
rm -rf "$src"
echo "$bin"
