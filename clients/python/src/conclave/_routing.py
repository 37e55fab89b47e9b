"""Endpoint choice and retry rules, shared by the sync and async clients (no I/O)."""

from __future__ import annotations

import random
import threading
from typing import Dict, List, Optional, Sequence, Union


def normalize(endpoint: str) -> str:
    endpoint = endpoint.strip().rstrip("/")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    return endpoint


def parse_endpoints(endpoints: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(endpoints, str):
        endpoints = [e for e in endpoints.split(",") if e.strip()]
    out: List[str] = []
    for e in endpoints:
        n = normalize(e)
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError("at least one endpoint is needed")
    return out


class Router:
    """Which node to ask next. Prefers the leader named by ``X-Conclave-Leader``
    (once its address is known from ``GET /v1/cluster``), else the configured
    endpoints in order, moving on from one that failed."""

    def __init__(self, endpoints: Sequence[str]) -> None:
        self.endpoints: List[str] = list(endpoints)
        self.members: Dict[int, str] = {}
        self.leader_id: Optional[int] = None
        self._cursor = 0
        self._lock = threading.Lock()

    @property
    def leader_url(self) -> Optional[str]:
        if self.leader_id is None:
            return None
        return self.members.get(self.leader_id)

    def candidates(self) -> List[str]:
        out = list(self.endpoints)
        for url in self.members.values():
            if url not in out:
                out.append(url)
        return out

    def pick(self) -> str:
        with self._lock:
            leader = self.leader_url
            if leader is not None:
                return leader
            cands = self.candidates()
            return cands[self._cursor % len(cands)]

    def next_for_watch(self, current: Optional[str]) -> str:
        """The endpoint after ``current`` (watches may use any node)."""
        with self._lock:
            cands = self.candidates()
            if current is None or current not in cands:
                return cands[0]
            return cands[(cands.index(current) + 1) % len(cands)]

    def failed(self, url: str) -> None:
        """``url`` could not serve the request: move on from it."""
        with self._lock:
            if self.leader_url == url:
                self.leader_id = None
            cands = self.candidates()
            if url in cands:
                self._cursor = cands.index(url) + 1
            else:
                self._cursor += 1

    def saw_leader(self, leader_id: Optional[int]) -> bool:
        """Records a leader hint; True when its address is still unknown."""
        with self._lock:
            self.leader_id = leader_id
            return leader_id is not None and leader_id not in self.members

    def learn_members(self, base_url: str, cluster: object) -> None:
        if not isinstance(cluster, dict):
            return
        scheme = base_url.split("://", 1)[0]
        with self._lock:
            for m in cluster.get("members") or []:
                try:
                    self.members[int(m["id"])] = f"{scheme}://{m['addr']}"
                except (KeyError, TypeError, ValueError):
                    continue


class Backoff:
    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * (2 ** self.attempt))
        self.attempt += 1
        return float(delay * (0.5 + random.random() / 2))
