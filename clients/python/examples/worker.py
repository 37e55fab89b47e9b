#!/usr/bin/env python3
"""Agent 2, a worker: claims "summarize" tasks (long poll), summarizes each, and
appends its section to the shared report under the lock, with the lock's fencing
token as a guard so a worker that lost the lock cannot write. Run several."""

from __future__ import annotations

import threading
from typing import Any

import conclave
from common import args, client, log


def main() -> int:
    a = args(__doc__ or "")
    c = client()
    ns = f"examples/{a.run}"
    with c.session(f"worker-{a.run}", capabilities=["summarize"], capacity=1) as me:
        worker = c.worker(me, wait_ms=1000)

        def summarize(task: conclave.Task) -> Any:
            words = task.payload["text"].split()
            summary = " ".join(words[:4]) + ("..." if len(words) > 4 else "")
            with c.lock(f"report-{a.run}", me, timeout=30) as lease:
                current = c.get(f"{ns}/sections")
                sections = dict(current.value) if current else {}
                sections[str(task.payload["section"])] = summary
                c.put(f"{ns}/sections", sections, guard=lease.guard,
                      if_version=current.version if current else 0)
            log("worker", f"task {task.id}: {summary!r}")
            return {"summary": summary}

        def stop_when_done() -> None:
            # The planner writes {ns}/done at the end: wait for it on the stream.
            for _ in c.watch(types=["kv.put"], prefix=f"{ns}/done", from_index=start):
                break
            worker.stop()  # takes effect after the current claim's wait

        start = int(c.cluster()["last_command_index"])
        if c.get(f"{ns}/done") is None:
            threading.Thread(target=stop_when_done, daemon=True).start()
            for task in worker.tasks():
                with task:  # completes with task.result, fails if summarize raises
                    task.result = summarize(task)
    c.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
