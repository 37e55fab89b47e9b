#!/usr/bin/env bash
# Creates (once) the Python venv the API fuzz run needs, with a pinned schemathesis.
# Idempotent: a venv that already has this version is left alone.
#   api-fuzz/setup.sh [VENV]      (default: .venv at the repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
version=4.32.5
if "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $version\$"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "schemathesis==$version"
"$venv/bin/schemathesis" --version
