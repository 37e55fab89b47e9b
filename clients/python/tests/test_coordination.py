from __future__ import annotations

import threading
from typing import Any, Dict, List

import pytest

import conclave
from conclave import BarrierResult, Client
from conclave.testing import wait_until


def test_election(client: Client, uid: str) -> None:
    with client.session(f"{uid}-1") as s1, client.session(f"{uid}-2") as s2:
        e1, e2 = client.election(uid, s1), client.election(uid, s2)
        lead = e1.campaign({"addr": "a"})
        assert lead.term > 0 and e1.leader()["leader_session_id"] == s1.id
        with pytest.raises(conclave.Timeout):
            e2.campaign({"addr": "b"}, timeout=0)
        won: List[conclave.Leadership] = []
        t = threading.Thread(target=lambda: won.append(e2.campaign({"addr": "b"}, timeout=20)))
        t.start()
        wait_until(lambda: e1.leader()["candidates"], 10, "s2 queued")
        assert client.put(f"{uid}/epoch", 1, guard=lead.guard) > 0
        lead.resign()
        t.join(20)
        assert won and won[0].term > lead.term
        view = e2.leader()
        assert view["leader_session_id"] == s2.id and view["value"] == {"addr": "b"}
        with pytest.raises(conclave.StaleFencingToken):
            client.put(f"{uid}/epoch", 2, guard=lead.guard)
        with won[0]:
            pass
        assert e2.leader()["leader_session_id"] is None


def test_barrier(client: Client, uid: str) -> None:
    sessions = [client.open_session(f"{uid}-{i}") for i in range(3)]
    results: List[BarrierResult] = []
    barrier = client.barrier(uid, 3)
    threads = [threading.Thread(target=lambda s=s: results.append(barrier.wait(s, timeout=20)))
               for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 3 and {r.generation for r in results} == {0}
    assert all(r.released for r in results)
    # A broken generation raises.
    errors: List[BaseException] = []

    def wait_broken() -> None:
        try:
            barrier.wait(sessions[0], timeout=20)
        except conclave.BarrierBroken as e:
            errors.append(e)

    t = threading.Thread(target=wait_broken)
    t.start()
    wait_until(lambda: client.get_barrier(uid)["arrived"], 10, "an arrival")
    sessions[1].end()
    barrier2 = client.barrier(uid, 3)
    with pytest.raises(conclave.SessionExpired):
        barrier2.wait(sessions[1])
    # sessions[0] is still waiting; breaking the generation takes a session that arrived.
    sessions[0].end()
    t.join(20)
    assert errors and isinstance(errors[0], conclave.BarrierBroken)
    sessions[2].end()


def test_proposal(client: Client, uid: str) -> None:
    pid = client.create_proposal(f"deploy {uid}", ["alice", "bob", "carol"],
                                 rule={"threshold": 2}, deadline_ms=30_000, payload={"v": 1})
    decided: List[Dict[str, Any]] = []
    t = threading.Thread(target=lambda: decided.append(client.wait_proposal(pid, timeout=20)))
    t.start()
    assert client.vote(pid, "alice", "yes")["state"] == "open"
    assert client.vote(pid, "bob", "yes")["state"] == "accepted"
    t.join(20)
    assert decided and decided[0]["state"] == "accepted"
    assert [v["voter"] for v in decided[0]["tally"]["votes"]] == ["alice", "bob"]
    with pytest.raises(conclave.ApiError) as info:
        client.vote(pid, "carol", "no")
    assert info.value.code == "proposal_decided"


def test_txn(client: Client, uid: str) -> None:
    a = client.put(f"{uid}/a", 10)
    r = client.txn(compare=[{"key": f"{uid}/a", "version": a}],
                   success=[{"put": {"key": f"{uid}/a", "value": 5}},
                            {"put": {"key": f"{uid}/b", "value": 5}}],
                   failure=[])
    assert r.succeeded and len(r.results) == 2
    assert client.get(f"{uid}/b").version == r.index  # type: ignore[union-attr]
    r2 = client.txn(compare=[{"key": f"{uid}/a", "version": a}],
                    success=[{"delete": {"key": f"{uid}/a"}}],
                    failure=[{"put": {"key": f"{uid}/stale", "value": True}}])
    assert not r2.succeeded and client.get(f"{uid}/stale") is not None
    with pytest.raises(conclave.CasMismatch) as info:
        client.txn(success=[{"put": {"key": f"{uid}/c", "value": 1}},
                            {"put": {"key": f"{uid}/a", "value": 1, "if_version": 1}}])
    assert info.value.details["op_index"] == 1
    assert client.get(f"{uid}/c") is None  # all or nothing


def test_two_phase_commit(client: Client, uid: str) -> None:
    tid = client.prepare_2pc(["db", "cache"], timeout_ms=30_000, payload={"m": uid})
    awaiting = client.list_2pc(participant="db", awaiting=True)
    assert tid in [t["id"] for t in awaiting]
    client.vote_2pc(tid, "db", "commit")
    assert client.vote_2pc(tid, "cache", "commit")["state"] == "committed"
    assert client.wait_2pc(tid, timeout=10)["state"] == "committed"
    client.ack_2pc(tid, "db")
    assert client.ack_2pc(tid, "cache")["removed"] is True

    tid2 = client.prepare_2pc(["db", "cache"], timeout_ms=30_000)
    client.vote_2pc(tid2, "db", "commit")
    client.vote_2pc(tid2, "cache", "abort")
    view = client.wait_2pc(tid2, timeout=10)
    assert view["state"] == "aborted" and view["reason"] == "vote"
