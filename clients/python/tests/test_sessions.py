from __future__ import annotations

import pytest

import conclave
from conclave import Client
from conclave.testing import LocalCluster, wait_until


def test_session_renews_itself(client: Client, uid: str) -> None:
    with client.session(uid, ttl_ms=600) as s:
        first = client.get_session(s.id)["expires_at_ms"]
        wait_until(lambda: client.get_session(s.id)["expires_at_ms"] > first + 500, 10,
                   "renewals past the first TTL")
        assert s.state == conclave.LIVE and s.history == ["live"]
        assert s.remaining() > 0
    assert s.state == conclave.EXPIRED and s.reason == "ended"
    with pytest.raises(conclave.SessionNotFound):
        client.get_session(s.id)


def test_live_jeopardy_expired_when_the_node_stops(cluster: LocalCluster, uid: str) -> None:
    follower = cluster.followers()[0]
    with Client([cluster.node(follower).url], cluster.token, discover=False,
                attempt_timeout=0.5) as c:
        s = c.open_session(uid, ttl_ms=1500)
        assert s.state == conclave.LIVE
        cluster.pause(follower)
        try:
            assert s.expired.wait(15)
        finally:
            cluster.resume(follower)
        assert s.history[0] == "live" and s.history[-1] == "expired"
        assert s.history.count("jeopardy") >= 1
        assert s.history.index("jeopardy") < s.history.index("expired")
        assert s.reason == "local lease deadline passed"
    with Client(cluster.endpoints, cluster.token) as other:
        def gone() -> bool:
            try:
                other.get_session(s.id)
                return False
            except conclave.SessionNotFound:
                return True
        wait_until(gone, 15, "the server expiring the session")


def test_server_side_end_is_seen_as_expired(client: Client, uid: str) -> None:
    s = client.open_session(uid, ttl_ms=900)
    assert client.end_session(s.id) is True
    assert s.expired.wait(10)
    assert s.reason == "the server says the session is gone"
    assert s.history == ["live", "expired"]
