"""The asyncio API on a subset: the same method names as the sync client."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest

import conclave
from conclave import AsyncClient, AsyncTask
from conclave.testing import LocalCluster


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_async_kv_cas(cluster: LocalCluster, uid: str) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.endpoints, cluster.token) as c:
            v = await c.put(f"{uid}/a", 1, if_version=0)
            with pytest.raises(conclave.CasMismatch):
                await c.put(f"{uid}/a", 2, if_version=0)
            kv = await c.get(f"{uid}/a")
            assert kv is not None and kv.version == v
            assert [k.key for k in await c.list(uid)] == [f"{uid}/a"]
            assert await c.delete(f"{uid}/a", if_version=v)
    run(main())


def test_async_session_lock_and_lost(cluster: LocalCluster, uid: str) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.endpoints, cluster.token) as c:
            async with c.session(f"{uid}-a", ttl_ms=3000) as a, c.session(f"{uid}-b") as b:
                async with c.lock(uid, a) as lease:
                    assert isinstance(lease.lost, asyncio.Event)
                    await c.put(f"{uid}/k", 1, guard=lease.guard)
                    waiter = asyncio.create_task(c.lock(uid, b, timeout=20).acquire())
                    while not (await c.get_lock(uid))["waiters"]:
                        await asyncio.sleep(0.02)
                    await a.end()
                    assert lease.lost.is_set()
                    second = await waiter
                    assert second.fencing_token > lease.fencing_token
                    await second.release()
            assert a.history == ["live", "expired"]
    run(main())


def test_async_worker_and_election(cluster: LocalCluster, uid: str) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.endpoints, cluster.token) as c:
            cap = f"cap-{uid}"
            ids = [await c.submit_task(f"{uid}-j", n, required_capabilities=[cap]) for n in (1, 2)]
            bad = await c.submit_task(f"{uid}-j", "boom", required_capabilities=[cap], max_attempts=1)

            async def handler(task: AsyncTask) -> Any:
                await asyncio.sleep(0)
                if task.payload == "boom":
                    raise ValueError("no")
                return task.payload * 10

            async with c.session(uid, capabilities=[cap]) as s:
                assert await c.worker(s, wait_ms=2000).run(handler, max_tasks=3) == 3
                lead = await c.election(uid, s).campaign("me")
                assert (await c.election(uid, s).leader())["leader_session_id"] == s.id
                await lead.resign()
            states = [(await c.get_task(i))["state"] for i in ids + [bad]]
            assert states == ["succeeded", "succeeded", "dead"]
            assert [(await c.get_task(i))["result"] for i in ids] == [10, 20]
    run(main())


def test_async_watch(cluster: LocalCluster, uid: str) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.endpoints, cluster.token) as c:
            v = await c.put(f"{uid}/0", 0)
            await c.put(f"{uid}/1", 1)
            got: List[str] = []
            async for e in c.watch(prefix=uid, from_index=v, timeout_ms=600):
                got.append(e.data["key"])
            assert got == [f"{uid}/0", f"{uid}/1"]
    run(main())


def test_sync_client_is_generated_from_the_async_one() -> None:
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "gen_sync.py"
    assert subprocess.run([sys.executable, str(tool), "--check"]).returncode == 0
