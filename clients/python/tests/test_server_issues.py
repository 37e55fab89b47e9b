"""Server behaviour found while testing the client, kept as strict xfails: each
turns into a failure (XPASS) once the server is fixed, so the marker gets removed."""

from __future__ import annotations

import httpx
import pytest

from conclave.testing import LocalCluster


@pytest.mark.xfail(strict=True, reason=(
    "server bug: on an idle leader the proposer's batch task holds an in-flight permit "
    "while it waits for the next write (src/replica/proposer.rs BatchTask::run acquires "
    "before recv), so Proposer::pause() never gets all max_inflight_batches permits: "
    "POST /v1/cluster/leader answers 504 'in-flight writes did not finish' after 5 s and "
    "SIGTERM stops the leader without handing leadership over"))
def test_leadership_handover_on_an_idle_cluster(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    r = httpx.post(cluster.node(leader).url + "/v1/cluster/leader", json={},
                   headers={"Authorization": f"Bearer {cluster.token}"}, timeout=30)
    assert r.status_code == 200, r.text
