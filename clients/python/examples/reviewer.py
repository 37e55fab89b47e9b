#!/usr/bin/env python3
"""Agent 3, the reviewer: waits for the planner's proposal, checks the report the
workers wrote, and votes."""

from __future__ import annotations

from common import REVIEWER, args, client, log


def main() -> int:
    a = args(__doc__ or "")
    c = client()
    ns = f"examples/{a.run}"
    index = int(c.cluster()["last_command_index"])
    while True:
        mine = [p for p in c.list_proposals(voter=REVIEWER, awaiting=True)
                if (p.get("payload") or {}).get("run") == a.run]
        if mine:
            break
        # Sleep on the event stream until a proposal is created.
        for event in c.watch(types=["proposal.created"], from_index=index + 1, timeout_ms=5000):
            index = event.index or index
            break
    proposal = mine[0]
    sections = c.get(f"{ns}/sections")
    complete = sections is not None and len(sections.value) == proposal["payload"]["sections"]
    vote = "yes" if complete else "no"
    c.vote(proposal["proposal_id"], REVIEWER, vote)
    log("reviewer", f"voted {vote} on proposal {proposal['proposal_id']} "
                    f"({len(sections.value) if sections else 0} sections)")
    c.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
