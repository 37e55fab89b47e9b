from __future__ import annotations

from typing import Any

import conclave
from conclave import Client, Task
from conclave.testing import wait_until


def test_worker_completes_and_fails(client: Client, uid: str) -> None:
    cap = f"cap-{uid}"
    ids = [
        client.submit_task(f"{uid}-job", {"n": 2}, required_capabilities=[cap]),
        client.submit_task(f"{uid}-job", {"boom": True}, required_capabilities=[cap],
                           max_attempts=1),
        client.submit_task(f"{uid}-job", {"n": 5}, required_capabilities=[cap]),
    ]
    seen: list[int] = []

    def handler(task: Task) -> Any:
        seen.append(task.id)
        if task.payload.get("boom"):
            raise RuntimeError("handler exploded")
        return {"square": task.payload["n"] ** 2}

    with client.session(uid, capabilities=[cap], capacity=1) as s:
        worker = client.worker(s, wait_ms=2000)
        assert worker.run(handler, max_tasks=3) == 3
    assert sorted(seen) == sorted(ids)
    done = [client.get_task(i) for i in ids]
    assert [t["state"] for t in done] == ["succeeded", "dead", "succeeded"]
    assert done[0]["result"] == {"square": 4} and done[2]["result"] == {"square": 25}
    assert "handler exploded" in done[1]["errors"][0]["error"]


def test_worker_sees_a_cancel_and_heartbeats(client: Client, uid: str) -> None:
    cap = f"cap-{uid}"
    task_id = client.submit_task(f"{uid}-slow", None, required_capabilities=[cap], lease_ms=600)
    with client.session(uid, capabilities=[cap]) as s:
        worker = client.worker(s, wait_ms=2000, heartbeat_interval=0.1)
        for task in worker.tasks(max_tasks=1):
            assert task.id == task_id
            task.progress = {"pct": 10}
            # The lease (600 ms) is kept by the background heartbeats:
            wait_until(lambda: client.get_task(task_id)["progress"] == {"pct": 10}, 10, "progress")
            client.cancel_task(task_id)
            assert task.cancelled.wait(10)
            task.result = "ignored"  # not completed: it was cancelled
        assert task.outcome == "cancelled"
    assert client.get_task(task_id)["state"] == "cancelled"


def test_claim_times_out_empty(client: Client, uid: str) -> None:
    with client.session(uid, capabilities=[f"none-{uid}"]) as s:
        assert client.claim(s.id, wait_ms=200) is None


def test_task_context_manager(client: Client, uid: str) -> None:
    cap = f"cap-{uid}"
    tid = client.submit_task(f"{uid}-cm", 3, required_capabilities=[cap])
    with client.session(uid, capabilities=[cap]) as s:
        claim = client.claim(s.id, wait_ms=5000)
        assert claim is not None and claim.task_id == tid
        task = conclave.Task(client, s, claim)
        with task:
            task.result = claim.task["payload"] + 1
    assert client.get_task(tid)["result"] == 4


def test_complete_with_claim_next_gets_the_next_task_in_one_command(
    client: Client, uid: str
) -> None:
    cap = f"cap-{uid}"
    first = client.submit_task(f"{uid}-a", 1, required_capabilities=[cap])
    second = client.submit_task(f"{uid}-b", 2, required_capabilities=[cap])
    with client.session(uid, capabilities=[cap], capacity=1) as s:
        claim = client.claim(s.id, wait_ms=2000)
        assert claim is not None and claim.task_id == first
        done = client.complete_task(first, claim.fencing_token, "one", claim_next=0)
        assert done["state"] == "succeeded"
        nxt = conclave.Claim.from_json(done["next"])
        # Claimed by the completion's own command.
        assert (nxt.task_id, nxt.index) == (second, done["index"])
        done = client.fail_task(second, nxt.fencing_token, "no", retryable=False,
                                claim_next=200)
        assert (done["state"], done["next"]) == ("dead", None)
