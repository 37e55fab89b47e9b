from __future__ import annotations

import threading

import pytest

import conclave
from conclave import Client


def test_lock_context_manager(client: Client, uid: str) -> None:
    with client.session(f"{uid}-a", ttl_ms=5000) as a, client.session(f"{uid}-b", ttl_ms=5000) as b:
        with client.lock(uid, a) as lease:
            assert lease.fencing_token > 0 and not lease.lost.is_set()
            view = client.get_lock(uid)
            assert [h["session_id"] for h in view["holders"]] == [a.id]
            assert client.put(f"{uid}/k", 1, guard=lease.guard) > 0
            with pytest.raises(conclave.LockHeld):
                with client.lock(uid, b, timeout=0):
                    pass
        assert client.get_lock(uid)["holders"] == []
        assert not lease.lost.is_set()

        # A waiter gets the lock when the holder leaves, with a higher token.
        got: list[int] = []
        with client.lock(uid, a) as first:
            t = threading.Thread(target=lambda: got.append(
                client.lock(uid, b, timeout=20).acquire().fencing_token))
            t.start()
            from conclave.testing import wait_until
            wait_until(lambda: client.get_lock(uid)["waiters"], 10, "b queued")
        t.join(20)
        assert got and got[0] > first.fencing_token
        with pytest.raises(conclave.StaleFencingToken):
            client.put(f"{uid}/k", 2, guard=first.guard)


def test_lease_lost_when_the_session_is_ended(client: Client, uid: str) -> None:
    s = client.open_session(uid, ttl_ms=5000)
    with client.lock(uid, s) as lease:
        s.end()
        assert lease.lost.is_set()
    with pytest.raises(conclave.StaleFencingToken):
        client.put(f"{uid}/k", 1, guard=lease.guard)


def test_lease_lost_when_the_server_ends_the_session(client: Client, uid: str) -> None:
    s = client.open_session(uid, ttl_ms=1200)
    with client.lock(uid, s) as lease:
        client.end_session(s.id)  # e.g. an operator, or another process with admin
        assert lease.lost.wait(10)
    assert client.get_lock(uid)["holders"] == []


def test_semaphore(client: Client, uid: str) -> None:
    with client.session(f"{uid}-1") as s1, client.session(f"{uid}-2") as s2, \
            client.session(f"{uid}-3") as s3:
        with client.semaphore(uid, s1, limit=2) as l1, client.semaphore(uid, s2, limit=2) as l2:
            assert l1.fencing_token != l2.fencing_token
            assert client.get_semaphore(uid)["used"] == 2
            with pytest.raises(conclave.PermitsUnavailable):
                client.semaphore(uid, s3, limit=2, timeout=0).acquire()
        assert client.get_semaphore(uid)["used"] == 0
