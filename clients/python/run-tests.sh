#!/usr/bin/env bash
# Runs the Python client's tests against a 3-node cluster they start themselves.
# Uses the repo's .venv (the one api-fuzz/setup.sh makes; created here if missing)
# and installs the client into it editable with its test extra, once.
#   clients/python/run-tests.sh [pytest args...]
# The server binary: $CONCLAVE_BIN, else target/debug/conclave (cargo test --workspace
# builds it).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${CONCLAVE_VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# Idempotent: reinstall only when pyproject.toml changed since the last install.
stamp="$venv/.conclave-client-installed"
if [ ! -f "$stamp" ] || [ clients/python/pyproject.toml -nt "$stamp" ] ||
  ! "$venv/bin/python" -c 'import conclave, httpx, pytest' 2>/dev/null; then
  "$venv/bin/pip" install --quiet -e './clients/python[test]'
  touch "$stamp"
fi
export CONCLAVE_BIN=${CONCLAVE_BIN:-$PWD/target/debug/conclave}
if [ ! -x "$CONCLAVE_BIN" ]; then
  echo "no conclave binary at $CONCLAVE_BIN (run cargo test --workspace or cargo build first, or set CONCLAVE_BIN)" >&2
  exit 1
fi
exec "$venv/bin/python" -m pytest clients/python/tests "$@"
