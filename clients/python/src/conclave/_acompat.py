"""asyncio primitives of the async client (``_compat`` is the threaded twin the
generated sync client uses)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Coroutine, Optional

Event = asyncio.Event


def monotonic() -> float:
    return time.monotonic()


async def sleep(seconds: float) -> None:
    await asyncio.sleep(max(0.0, seconds))


async def wait_event(event: asyncio.Event, timeout: Optional[float]) -> bool:
    """Waits until ``event`` is set or ``timeout`` seconds pass; True if set."""
    if event.is_set():
        return True
    if timeout is None:
        await event.wait()
        return True
    try:
        await asyncio.wait_for(event.wait(), max(0.0, timeout))
    except asyncio.TimeoutError:
        pass
    return event.is_set()


class Background:
    """A background loop (an asyncio task)."""

    def __init__(self, fn: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._task: "asyncio.Task[None]" = asyncio.get_running_loop().create_task(fn(), name=name)

    def done(self) -> bool:
        return self._task.done()

    async def join(self, timeout: Optional[float] = None) -> None:
        await asyncio.wait({self._task}, timeout=timeout)


def spawn(fn: Callable[[], Coroutine[Any, Any, None]], name: str) -> Background:
    return Background(fn, name)
