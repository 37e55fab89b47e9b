from __future__ import annotations

import pytest

import conclave
from conclave import Client
from conclave.testing import LocalCluster, free_ports


def test_put_get_cas_delete_list(client: Client, uid: str) -> None:
    key = f"{uid}/a"
    v1 = client.put(key, {"n": 1}, if_version=0)
    kv = client.get(key)
    assert kv is not None and kv.value == {"n": 1} and kv.version == v1 and kv.create_index == v1

    with pytest.raises(conclave.CasMismatch) as info:
        client.put(key, {"n": 2}, if_version=0)
    err = info.value
    assert err.status == 409 and err.code == "cas_mismatch" and err.current_version == v1
    assert err.message and isinstance(err, conclave.ApiError)

    v2 = client.put(key, {"n": 2}, if_version=v1)
    assert v2 > v1
    with pytest.raises(conclave.CasMismatch):
        client.delete(key, if_version=v1)

    client.put(f"{uid}/b", "b")
    assert [kv.key for kv in client.list(uid + "/")] == [f"{uid}/a", f"{uid}/b"]
    assert client.delete(key, if_version=v2) is True
    assert client.delete(key) is False
    assert client.get(key) is None


def test_request_id_is_idempotent(client: Client, uid: str) -> None:
    key = f"{uid}/idem"
    v = client.put(key, 1, request_id=f"{uid}-r1")
    assert client.put(key, 1, request_id=f"{uid}-r1") == v  # answered from the table
    assert client.get(key).version == v  # type: ignore[union-attr]
    with pytest.raises(conclave.RequestIdConflict):
        client.put(key, 2, request_id=f"{uid}-r1")
    status = client.request_status(f"{uid}-r1")
    assert status["applied"] is True and status["index"] == v


def test_errors_carry_status_code_message_details(client: Client, uid: str) -> None:
    with pytest.raises(conclave.BadRequest) as info:
        client.put("x" * 600, 1)
    assert info.value.status == 400 and info.value.code == "key_too_long"
    with pytest.raises(conclave.SessionNotFound) as nf:
        client.put(f"{uid}/eph", 1, session_id=999_999_999)
    assert nf.value.status == 404 and isinstance(nf.value, conclave.NotFound)


def test_wrong_token_is_unauthenticated(cluster: LocalCluster) -> None:
    with Client(cluster.endpoints, "not-a-token") as bad:
        with pytest.raises(conclave.Unauthenticated) as info:
            bad.get("anything")
    assert info.value.status == 401


def test_follows_the_leader_from_a_follower(cluster: LocalCluster, uid: str) -> None:
    leader = cluster.wait_for_leader()
    follower = cluster.followers()[0]
    with Client([cluster.node(follower).url], cluster.token) as c:
        c.put(f"{uid}/f", 1)
        assert c.leader_endpoint == cluster.node(leader).url
        c.put(f"{uid}/f", 2)  # now sent to the leader directly
        assert c.get(f"{uid}/f").value == 2  # type: ignore[union-attr]


def test_dead_first_endpoint_is_skipped(cluster: LocalCluster, uid: str) -> None:
    (dead,) = free_ports(1)
    with Client([f"127.0.0.1:{dead}"] + cluster.endpoints, cluster.token) as c:
        assert c.put(f"{uid}/d", 1) > 0


def test_no_reachable_endpoint_is_unavailable(cluster: LocalCluster) -> None:
    (dead,) = free_ports(1)
    with Client([f"127.0.0.1:{dead}"], cluster.token, timeout=1.0) as c:
        with pytest.raises(conclave.Unavailable) as info:
            c.put("never", 1)
    assert not isinstance(info.value, conclave.Indeterminate)
