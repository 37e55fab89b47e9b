#!/usr/bin/env python3
"""Agent 1, the planner: splits a job into tasks, waits for the workers to finish
them, asks the reviewer for approval (a proposal), and publishes the report under
the shared lock once it is accepted."""

from __future__ import annotations

import conclave
from common import REVIEWER, args, client, log

TEXT = [
    "Raft keeps a replicated log consistent across nodes",
    "sessions tell the cluster which agents are alive",
    "fencing tokens stop a paused holder from writing late",
    "proposals let agents approve an action before it happens",
    "tasks are leased to workers and retried when they fail",
    "a watch stream tells agents what changed without polling",
]


def main() -> int:
    a = args(__doc__ or "")
    c = client()
    ns = f"examples/{a.run}"
    kind = f"summarize-{a.run}"
    with c.session(f"planner-{a.run}", capacity=0) as me:
        start = c.put(f"{ns}/status", "planning")
        ids = [c.submit_task(kind, {"section": i, "text": TEXT[i % len(TEXT)]},
                             required_capabilities=["summarize"], idempotency_key=f"{kind}-{i}")
               for i in range(a.tasks)]
        log("planner", f"submitted tasks {ids}")

        # Wait for every task to end, from the event stream (no polling).
        pending = set(ids)
        for event in c.watch(types=["task.succeeded", "task.dead"], prefix=kind, from_index=start):
            pending.discard(event.data["task_id"])
            log("planner", f"task {event.data['task_id']} {event.type.split('.')[1]}")
            if not pending:
                break
        results = {t: c.get_task(t)["state"] for t in ids}
        if any(s != "succeeded" for s in results.values()):
            log("planner", f"some tasks did not succeed: {results}")
            return 1

        proposal = c.create_proposal(f"publish report {a.run}", [REVIEWER], rule="unanimous",
                                     deadline_ms=60_000, payload={"run": a.run, "sections": a.tasks})
        log("planner", f"asked for approval: proposal {proposal}")
        decision = c.wait_proposal(proposal, timeout=60)
        log("planner", f"proposal {proposal} {decision['state']}")
        if decision["state"] != "accepted":
            return 1

        with c.lock(f"report-{a.run}", me, timeout=30) as lease:
            sections = c.get(f"{ns}/sections")
            assert sections is not None
            c.put(f"{ns}/published", {"sections": sections.value, "approved_by": REVIEWER},
                  guard=lease.guard)
            log("planner", f"published {len(sections.value)} sections (fencing token {lease.fencing_token})")
        c.put(f"{ns}/done", True)
    c.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
