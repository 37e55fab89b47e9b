"""Retries on unknown outcomes: once applied, whatever the number of attempts."""

from __future__ import annotations

import pytest

import conclave
from conclave import Client
from conclave.testing import LocalCluster, wait_until


def test_write_sent_to_a_stopped_leader_applies_once(cluster: LocalCluster, uid: str) -> None:
    leader = cluster.wait_for_leader()
    others = [cluster.node(i).url for i in cluster.followers()]
    key, rid = f"{uid}/once", f"{uid}-once"
    with Client([cluster.node(leader).url] + others, cluster.token,
                attempt_timeout=1.0, timeout=40.0) as c:
        c.get("warm-up")  # learns the leader, so the write goes to it first
        assert c.leader_endpoint == cluster.node(leader).url
        cluster.pause(leader)  # the write is sent, and never answered, by this node
        try:
            version = c.put(key, {"v": 1}, if_version=0, request_id=rid)
            assert sum(c.retried.values()) >= 1
        finally:
            cluster.resume(leader)  # it may now handle the request it had buffered
    with Client(cluster.endpoints, cluster.token) as c:
        status = c.request_status(rid)
        assert status["applied"] is True and status["index"] == version
        kv = c.get(key)
        assert kv is not None and kv.version == version == kv.create_index
        # The old leader has caught up (it serves the same version locally)...
        old = conclave.Client([cluster.node(leader).url], cluster.token, discover=False)
        wait_until(lambda: (old.get(key, stale=True) or kv).version == version
                   and old.get(key, stale=True) is not None, 20, "old leader caught up")
        old.close()
        # ...and the key was written exactly once: one kv.put event in the stream.
        events = [e for e in c.watch(prefix=key, from_index=version, timeout_ms=1000)
                  if e.data.get("key") == key]
        assert [e.type for e in events] == ["kv.put"]
        assert c.get(key).version == version  # type: ignore[union-attr]


def test_unsafe_request_is_not_retried_after_it_was_sent(cluster: LocalCluster) -> None:
    follower = cluster.followers()[0]
    with Client([cluster.node(follower).url], cluster.token, discover=False,
                attempt_timeout=1.0, timeout=5.0) as c:
        s = c.create_session("claimer", ttl_ms=5000)
        cluster.pause(follower)
        try:
            # A claim takes no request_id: a lost answer must surface, not repeat.
            with pytest.raises(conclave.Indeterminate):
                c.claim(s["session_id"], wait_ms=0)
        finally:
            cluster.resume(follower)


def test_504_without_quorum_is_retried_and_applies_once(cluster: LocalCluster, uid: str) -> None:
    """The leader loses its quorum: the write is appended but not committed (504
    after the server's write timeout). Once the followers are back, the original
    entry commits too; the same-id retry must not apply a second time."""
    import threading

    leader = cluster.wait_for_leader()
    followers = cluster.followers()
    key, rid = f"{uid}/q", f"{uid}-q"
    c = Client([cluster.node(leader).url], cluster.token, discover=False,
               attempt_timeout=8.0, timeout=60.0)
    result: list[int] = []
    for f in followers:
        cluster.pause(f)
    try:
        t = threading.Thread(target=lambda: result.append(
            c.put(key, "once", if_version=0, request_id=rid)))
        t.start()
        wait_until(lambda: c.retried["indeterminate"] >= 1, 20, "a 504 retried")
    finally:
        for f in followers:
            cluster.resume(f)
    t.join(60)
    assert result, "the write did not succeed after the quorum came back"
    version = result[0]
    c.close()
    with Client(cluster.endpoints, cluster.token) as other:
        status = other.request_status(rid)
        assert status["applied"] is True and status["index"] == version
        assert other.get(key).version == version  # type: ignore[union-attr]
        events = [e for e in other.watch(prefix=key, from_index=1, timeout_ms=1000)
                  if e.data.get("key") == key]
        assert [(e.type, e.index) for e in events] == [("kv.put", version)]
