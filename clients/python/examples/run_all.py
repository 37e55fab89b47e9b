#!/usr/bin/env python3
"""Starts the three agents (planner, two workers, reviewer) as processes against
the cluster in CONCLAVE_ENDPOINTS / CONCLAVE_TOKEN and waits for them."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    run = sys.argv[1] if len(sys.argv) > 1 else "demo-" + uuid.uuid4().hex[:6]
    agents = ["worker.py", "worker.py", "reviewer.py", "planner.py"]
    procs = [subprocess.Popen([sys.executable, str(HERE / a), "--run", run]) for a in agents]
    codes = [p.wait(timeout=120) for p in procs]
    print(f"exit codes {dict(zip(agents, codes))}")
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
