"""Server bugs found while testing the client, kept as regression tests.

An idle leader's handover used to answer 504 after 5 s: the proposer's batch task
held an in-flight permit while it waited for the next write, so pausing it (all
permits) never finished (fixed in src/replica/proposer.rs; also pinned by
tests/operations.rs)."""

from __future__ import annotations

import httpx

from conclave.testing import LocalCluster


def test_leadership_handover_on_an_idle_cluster(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    r = httpx.post(cluster.node(leader).url + "/v1/cluster/leader", json={},
                   headers={"Authorization": f"Bearer {cluster.token}"}, timeout=30)
    assert r.status_code == 200, r.text
