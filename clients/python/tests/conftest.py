"""The test session's cluster: three real `conclave serve` processes with auth on,
started once (session scope) and stopped by their PIDs at the end.

The binary is $CONCLAVE_BIN, else target/debug/conclave under the repo root. While
the session runs, CONCLAVE_ENDPOINTS and CONCLAVE_TOKEN are set in os.environ
(subprocesses, e.g. the examples or a browser test, inherit them), and
$CONCLAVE_CLUSTER_FILE, when set, receives {"endpoints", "token"} as JSON. Other
suites can use the `conclave_cluster` fixture by loading this file as a plugin
(`-p conftest` with this directory on the path) or `conclave.testing.LocalCluster`.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from conclave import Client
from conclave.testing import LocalCluster, default_binary

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def conclave_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster(default_binary(REPO_ROOT))
    cluster.start()
    saved = {k: os.environ.get(k) for k in ("CONCLAVE_ENDPOINTS", "CONCLAVE_TOKEN")}
    os.environ.update(cluster.env())
    path = os.environ.get("CONCLAVE_CLUSTER_FILE")
    if path:
        Path(path).write_text(json.dumps({"endpoints": cluster.endpoints, "token": cluster.token}))
    try:
        yield cluster
    finally:
        cluster.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture()
def cluster(conclave_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The shared cluster, healed (every node running, a leader) after each test."""
    conclave_cluster.heal()
    yield conclave_cluster
    conclave_cluster.heal()


@pytest.fixture()
def client(cluster: LocalCluster) -> Iterator[Client]:
    c = Client(cluster.endpoints, cluster.token, timeout=30.0, attempt_timeout=5.0)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture()
def uid() -> str:
    """A unique prefix for names, so tests sharing the cluster never collide."""
    return "t" + uuid.uuid4().hex[:10]
