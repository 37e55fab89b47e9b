from __future__ import annotations

import threading
from typing import List

import httpx
import pytest

import conclave
from conclave import Client, Event
from conclave.testing import LocalCluster


def test_watch_resumes_across_a_node_kill(cluster: LocalCluster, uid: str) -> None:
    follower = cluster.followers()[0]
    # Snapshot the node now: after its restart its history starts there (410 below).
    httpx.post(cluster.node(follower).url + "/v1/cluster/snapshot",
               headers={"Authorization": f"Bearer {cluster.token}"}, timeout=30).raise_for_status()
    first = [cluster.node(follower).url] + [n.url for n in cluster.nodes if n.id != follower]
    writer = Client(cluster.endpoints, cluster.token)
    start = writer.put(f"{uid}/k000", 0)
    count = 60
    with Client(first, cluster.token) as c:  # no request yet: the watch starts at `follower`
        watch = c.watch(prefix=f"{uid}/", from_index=start, read_timeout=5)
        received: List[Event] = []

        def write() -> None:
            for i in range(1, count):
                writer.put(f"{uid}/k{i:03d}", i)

        t: threading.Thread | None = None
        for event in watch:
            received.append(event)
            if len(received) == 1:
                t = threading.Thread(target=write)
                t.start()
            if len(received) == 15:
                cluster.kill(follower)
            if len(received) == count:
                break
        assert t is not None
        t.join(30)
        writer.close()
    keys = [e.data["key"] for e in received]
    assert keys == [f"{uid}/k{i:03d}" for i in range(count)]  # no gap, no duplicate
    ids = [e.id for e in received]
    assert len(set(ids)) == count
    assert watch.reconnects >= 1
    assert watch.endpoints_used[0] == cluster.node(follower).url
    assert len(set(watch.endpoints_used)) >= 2

    # The restarted node's history begins at its snapshot: an older start is 410.
    cluster.restart(follower)
    with Client([cluster.node(follower).url], cluster.token, discover=False) as c:
        with pytest.raises(conclave.Compacted) as info:
            next(iter(c.watch(from_index=1, timeout_ms=500)))
        assert info.value.status == 410 and info.value.oldest_index > 1


def test_watch_types_and_timeout(client: Client, uid: str) -> None:
    with client.session(uid) as s:
        v = client.put(f"{uid}/x", 1)
        with client.lock(uid, s):
            pass
        events = list(client.watch(from_index=v, types=["lock"], prefix=uid, timeout_ms=800))
    assert [e.type for e in events] == ["lock.granted", "lock.released"]
    assert all(e.data["name"] == uid for e in events)
