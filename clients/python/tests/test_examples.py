from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conclave import Client
from conclave.testing import LocalCluster

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_three_agents_cooperate(cluster: LocalCluster, client: Client, uid: str) -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "run_all.py"), uid],
                         env=dict(__import__("os").environ, **cluster.env()),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    published = client.get(f"examples/{uid}/published")
    assert published is not None and len(published.value["sections"]) == 4
    assert "voted yes" in out.stdout
