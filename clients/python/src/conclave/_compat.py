"""Threaded primitives of the sync client (twin of ``_acompat``)."""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

Event = threading.Event


def monotonic() -> float:
    return time.monotonic()


def sleep(seconds: float) -> None:
    time.sleep(max(0.0, seconds))


def wait_event(event: threading.Event, timeout: Optional[float]) -> bool:
    """Waits until ``event`` is set or ``timeout`` seconds pass; True if set."""
    return event.wait(None if timeout is None else max(0.0, timeout))


class Background:
    """A background loop (a daemon thread)."""

    def __init__(self, fn: Callable[[], None], name: str) -> None:
        self._thread = threading.Thread(target=fn, name=name, daemon=True)
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: Optional[float] = None) -> None:
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


def spawn(fn: Callable[[], None], name: str) -> Background:
    return Background(fn, name)
