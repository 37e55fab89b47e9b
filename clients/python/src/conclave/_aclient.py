"""The asyncio client. ``_client.py`` (the sync client) is generated from this file
by ``tools/gen_sync.py``: edit this one and regenerate."""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)
from urllib.parse import quote

import httpx

from . import _acompat
from ._errors import (
    ApiError,
    BarrierBroken,
    ConclaveError,
    Indeterminate,
    KeyNotFound,
    Lagged,
    LockHeld,
    PermitsUnavailable,
    SessionExpired,
    SessionNotFound,
    StaleFencingToken,
    TaskNotFound,
    Timeout,
    Unavailable,
    WrongState,
    error_from,
)
from ._models import (
    EXPIRED,
    JEOPARDY,
    LIVE,
    BarrierResult,
    Claim,
    Event,
    Json,
    KeyValue,
    TxnResult,
    View,
)
from ._routing import Backoff, Router, parse_endpoints
from ._sse import SseParser

MAX_WAIT_MS = 60_000
_RETRY_429 = ("overloaded", "too_many_watchers", "rate_limited")


def new_request_id() -> str:
    """A fresh ``request_id`` for one logical write."""
    return "py-" + uuid.uuid4().hex


def _seg(name: str) -> str:
    return quote(name, safe="")


def _opt(body: Dict[str, Any], **fields: Any) -> Dict[str, Any]:
    for k, v in fields.items():
        if v is not None:
            body[k] = v
    return body


@dataclass
class _Reply:
    status: int
    body: Any
    headers: httpx.Headers
    url: str


class AsyncClient:
    """A Conclave client over a list of endpoints (any node serves any request).

    It follows the leader named by ``X-Conclave-Leader``, retries ``503`` anywhere
    with bounded backoff until ``timeout`` seconds have passed, and retries ``504``
    and lost connections only for requests that are safe to repeat: reads, writes
    that carry a ``request_id`` (one is generated per call when none is given and
    reused across its retries) and naturally idempotent calls (keepalive, acquire
    and campaign, which the session deduplicates). Errors raise :class:`ApiError`
    subclasses.
    """

    def __init__(
        self,
        endpoints: Union[str, Sequence[str]],
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        attempt_timeout: float = 10.0,
        connect_timeout: float = 2.0,
        backoff_base: float = 0.05,
        backoff_max: float = 1.0,
        discover: bool = True,
        verify: Union[bool, str] = True,
    ) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.connect_timeout = connect_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.discover = discover
        self._router = Router(self.endpoints)
        #: How many attempts were retried, by the code that caused the retry
        #: (``no_leader``, ``indeterminate``, ``connect_failed``, ``connection_lost``...).
        self.retried: Counter[str] = Counter()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            headers=headers,
            verify=verify,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> "AsyncClient":
        """``CONCLAVE_ENDPOINTS`` (comma-separated) and ``CONCLAVE_TOKEN``."""
        return cls(
            os.environ.get("CONCLAVE_ENDPOINTS", "127.0.0.1:7000"),
            os.environ.get("CONCLAVE_TOKEN"),
            **kwargs,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def leader_endpoint(self) -> Optional[str]:
        """The leader's URL, once a leader hint and its address are known."""
        return self._router.leader_url

    # ------------------------------------------------------------------ transport

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Optional[Dict[str, Any]] = None,
        params: Optional[Dict[str, Any]] = None,
        safe: bool,
        wait_ms: int = 0,
        request_id: Optional[str] = None,
        deadline: Optional[float] = None,
    ) -> _Reply:
        """One logical request, retried per the contract. ``safe``: may be repeated
        when its outcome is unknown (504, connection lost after sending)."""
        extra = wait_ms / 1000.0
        if deadline is None:
            deadline = _acompat.monotonic() + self.timeout + extra
        backoff = Backoff(self.backoff_base, self.backoff_max)
        last: Optional[ApiError] = None
        maybe_applied = False
        query = {k: v for k, v in (params or {}).items() if v is not None}
        while True:
            url = self._router.pick()
            left = deadline - _acompat.monotonic()
            per_try = max(0.05, min(self.attempt_timeout + extra, left))
            delay_floor = 0.0
            try:
                resp = await self._http.request(
                    method,
                    url + path,
                    json=body,
                    params=query or None,
                    timeout=httpx.Timeout(per_try, connect=min(self.connect_timeout, per_try)),
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent: safe to retry whatever the request.
                self._router.failed(url)
                last = Unavailable(0, "connect_failed", f"{url}: {exc!r}", request_id=request_id)
            except httpx.TransportError as exc:
                self._router.failed(url)
                maybe_applied = True
                last = Indeterminate(
                    0, "connection_lost", f"{url}: {exc!r}", request_id=request_id
                )
                if not safe:
                    raise last from exc
            else:
                reply = await self._reply(url, resp)
                if 200 <= reply.status < 300:
                    return reply
                err = error_from(reply.status, reply.body, request_id)
                if reply.status == 503:
                    hinted = err.details.get("leader_id")
                    if isinstance(hinted, int):
                        await self._hint(url, hinted)
                    if self._router.pick() == url:
                        self._router.failed(url)
                    last = err
                elif reply.status == 504:
                    maybe_applied = True
                    last = err
                    if not safe:
                        raise err
                elif reply.status == 429 and err.code in _RETRY_429:
                    try:
                        delay_floor = float(reply.headers.get("retry-after", "1"))
                    except ValueError:
                        delay_floor = 1.0
                    last = err
                else:
                    raise err
            delay = max(delay_floor, backoff.next())
            if _acompat.monotonic() + delay >= deadline:
                assert last is not None
                if maybe_applied and not isinstance(last, Indeterminate):
                    raise Indeterminate(
                        last.status, "indeterminate", f"outcome unknown; last: {last}",
                        last.details, request_id,
                    )
                raise last
            self.retried[last.code if last is not None else "unknown"] += 1
            await _acompat.sleep(delay)

    async def _reply(self, url: str, resp: httpx.Response) -> _Reply:
        body: Any = None
        if resp.content:
            try:
                body = resp.json()
            except ValueError:
                body = resp.text
        leader = resp.headers.get("x-conclave-leader")
        if leader is not None and leader.isdigit():
            await self._hint(url, int(leader))
        return _Reply(resp.status_code, body, resp.headers, url)

    async def _hint(self, url: str, leader_id: int) -> None:
        if not self.discover:
            return
        if self._router.saw_leader(leader_id):
            try:
                resp = await self._http.get(
                    url + "/v1/cluster", timeout=min(self.attempt_timeout, 2.0)
                )
                if resp.status_code == 200:
                    self._router.learn_members(url, resp.json())
            except (httpx.HTTPError, ValueError):
                pass

    async def _get(self, path: str, params: Optional[Dict[str, Any]] = None, wait_ms: int = 0) -> Any:
        return (await self._call("GET", path, params=params, safe=True, wait_ms=wait_ms)).body

    async def _write(
        self,
        method: str,
        path: str,
        body: Dict[str, Any],
        request_id: Optional[str] = None,
        *,
        idempotent: bool = True,
        safe: Optional[bool] = None,
        wait_ms: int = 0,
        deadline: Optional[float] = None,
    ) -> Any:
        """A write; with ``idempotent`` it carries a ``request_id`` (generated when
        none is given), the same on every retry."""
        if idempotent:
            request_id = request_id or new_request_id()
            body["request_id"] = request_id
        reply = await self._call(
            method, path, body=body, safe=idempotent if safe is None else safe,
            wait_ms=wait_ms, request_id=request_id, deadline=deadline,
        )
        return reply.body

    async def _pages(self, path: str, params: Dict[str, Any]) -> List[View]:
        items: List[View] = []
        after: Any = None
        while True:
            page = await self._get(path, {**params, "after": after})
            items.extend(page.get("items", []))
            after = page.get("next_after")
            if after is None:
                return items

    # ------------------------------------------------------------------ cluster

    async def cluster(self) -> View:
        """``GET /v1/cluster`` of the node the client talks to."""
        result: View = await self._get("/v1/cluster")
        return result

    async def request_status(self, request_id: str) -> View:
        """``GET /v1/requests/{id}``: was it applied, and its recorded result."""
        result: View = await self._get(f"/v1/requests/{_seg(request_id)}")
        return result

    # ------------------------------------------------------------------ key/value

    async def put(
        self,
        key: str,
        value: Json,
        *,
        if_version: Optional[int] = None,
        session_id: Optional[int] = None,
        guard: Optional[Dict[str, Any]] = None,
        request_id: Optional[str] = None,
    ) -> int:
        """Writes ``value``; ``if_version`` makes it a compare-and-set (0: the key
        must not exist). Returns the new version. Raises :class:`CasMismatch`."""
        body = _opt({"value": value}, if_version=if_version, session_id=session_id, guard=guard)
        result = await self._write("PUT", "/v1/kv/" + quote(key, safe="/"), body, request_id)
        return int(result["version"])

    async def get(self, key: str, *, stale: bool = False) -> Optional[KeyValue]:
        """The key, or None when it does not exist."""
        try:
            body = await self._get(
                "/v1/kv/" + quote(key, safe="/"), {"consistency": "stale" if stale else None}
            )
        except KeyNotFound:
            return None
        return KeyValue.from_json(body)

    async def delete(
        self,
        key: str,
        *,
        if_version: Optional[int] = None,
        guard: Optional[Dict[str, Any]] = None,
        request_id: Optional[str] = None,
    ) -> bool:
        """Deletes the key; False when it did not exist."""
        body = _opt({}, if_version=if_version, guard=guard)
        result = await self._write("DELETE", "/v1/kv/" + quote(key, safe="/"), body, request_id)
        return bool(result["deleted"])

    async def list(self, prefix: str = "", *, stale: bool = False) -> List[KeyValue]:
        """Every key starting with ``prefix`` (all pages), in byte order."""
        items = await self._pages(
            "/v1/kv", {"prefix": prefix, "consistency": "stale" if stale else None}
        )
        return [KeyValue.from_json(i) for i in items]

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self,
        name: str,
        *,
        ttl_ms: Optional[int] = None,
        capabilities: Optional[Sequence[str]] = None,
        capacity: Optional[int] = None,
        metadata: Json = None,
        request_id: Optional[str] = None,
    ) -> View:
        """``POST /v1/sessions`` (no renewals: see :meth:`session`)."""
        body = _opt(
            {"name": name},
            ttl_ms=ttl_ms,
            capabilities=None if capabilities is None else list(capabilities),
            capacity=capacity,
            metadata=metadata,
        )
        result: View = await self._write("POST", "/v1/sessions", body, request_id)
        return result

    def session(
        self,
        name: str,
        *,
        ttl_ms: int = 10_000,
        capabilities: Optional[Sequence[str]] = None,
        capacity: Optional[int] = None,
        metadata: Json = None,
        keepalive_interval: Optional[float] = None,
        safety_margin: Optional[float] = None,
    ) -> "AsyncSession":
        """A session that renews itself; created by ``async with`` or ``open()``."""
        return AsyncSession(
            self,
            name,
            ttl_ms=ttl_ms,
            capabilities=capabilities,
            capacity=capacity,
            metadata=metadata,
            keepalive_interval=keepalive_interval,
            safety_margin=safety_margin,
        )

    async def open_session(self, name: str, **kwargs: Any) -> "AsyncSession":
        """Creates a self-renewing session (see :meth:`session` for the options)."""
        return await self.session(name, **kwargs).open()

    async def keepalive(self, session_id: int, *, deadline: Optional[float] = None) -> View:
        result: View = (
            await self._call(
                "POST", f"/v1/sessions/{session_id}/keepalive", safe=True, deadline=deadline
            )
        ).body
        return result

    async def end_session(self, session_id: int) -> bool:
        """Ends a session now; False if it was already gone."""
        try:
            await self._call("DELETE", f"/v1/sessions/{session_id}", safe=True)
        except SessionNotFound:
            return False
        return True

    async def get_session(self, session_id: int) -> View:
        result: View = await self._get(f"/v1/sessions/{session_id}")
        return result

    async def list_sessions(self, capability: Optional[str] = None) -> List[View]:
        return await self._pages("/v1/sessions", {"capability": capability})

    # ------------------------------------------------------------------ tasks

    async def submit_task(
        self,
        kind: str,
        payload: Json = None,
        *,
        required_capabilities: Optional[Sequence[str]] = None,
        priority: Optional[int] = None,
        max_attempts: Optional[int] = None,
        lease_ms: Optional[int] = None,
        not_before_ms: Optional[int] = None,
        depends_on: Optional[Sequence[int]] = None,
        idempotency_key: Optional[str] = None,
        request_id: Optional[str] = None,
    ) -> int:
        """Submits a task; returns its id."""
        body = _opt(
            {"kind": kind, "payload": payload},
            required_capabilities=None
            if required_capabilities is None
            else list(required_capabilities),
            priority=priority,
            max_attempts=max_attempts,
            lease_ms=lease_ms,
            not_before_ms=not_before_ms,
            depends_on=None if depends_on is None else list(depends_on),
            idempotency_key=idempotency_key,
        )
        result = await self._write("POST", "/v1/tasks", body, request_id)
        return int(result["task_id"])

    async def get_task(self, task_id: int) -> View:
        result: View = await self._get(f"/v1/tasks/{task_id}")
        return result

    async def list_tasks(self, *, state: Optional[str] = None, kind: Optional[str] = None) -> List[View]:
        return await self._pages("/v1/tasks", {"state": state, "kind": kind})

    async def cancel_task(self, task_id: int, *, request_id: Optional[str] = None) -> View:
        result: View = await self._write("DELETE", f"/v1/tasks/{task_id}", {}, request_id)
        return result

    async def retry_task(self, task_id: int, *, request_id: Optional[str] = None) -> View:
        result: View = await self._write("POST", f"/v1/tasks/{task_id}/retry", {}, request_id)
        return result

    async def claim(self, session_id: int, *, wait_ms: int = 0) -> Optional[Claim]:
        """Claims the session's next assigned task, waiting up to ``wait_ms``; None
        when none came. A claim takes no ``request_id``: a lost answer raises
        :class:`Indeterminate` (the task is then requeued when its lease ends)."""
        body = {"session_id": session_id, "wait_ms": min(wait_ms, MAX_WAIT_MS)}
        reply = await self._call(
            "POST", "/v1/tasks/claim", body=body, safe=False, wait_ms=body["wait_ms"]
        )
        if reply.status == 204 or not reply.body:
            return None
        return Claim.from_json(reply.body)

    async def heartbeat(
        self, task_id: int, fencing_token: int, *, progress: Json = None,
        request_id: Optional[str] = None,
    ) -> View:
        body = _opt({"fencing_token": fencing_token}, progress=progress)
        result: View = await self._write(
            "POST", f"/v1/tasks/{task_id}/heartbeat", body, request_id
        )
        return result

    async def complete_task(
        self, task_id: int, fencing_token: int, result: Json = None, *,
        request_id: Optional[str] = None, claim_next: Optional[int] = None,
    ) -> View:
        """Completes the task. With ``claim_next`` (a wait in ms) the answer's
        ``next`` is the session's next task, claimed by the same command when one is
        ready, else waited for (``None`` when none came): a task cycle's second
        request. With a wait the call is not retried after an unknown outcome (like
        a claim); with ``claim_next=0`` it is one command, retried with its id."""
        body = {"fencing_token": fencing_token, "result": result}
        return await self._finish("complete", task_id, body, request_id, claim_next)

    async def fail_task(
        self, task_id: int, fencing_token: int, error: str, *, retryable: bool = True,
        request_id: Optional[str] = None, claim_next: Optional[int] = None,
    ) -> View:
        """Fails the task; ``claim_next`` as :meth:`complete_task`."""
        body = {"fencing_token": fencing_token, "error": error, "retryable": retryable}
        return await self._finish("fail", task_id, body, request_id, claim_next)

    async def _finish(
        self, verb: str, task_id: int, body: Dict[str, Any], request_id: Optional[str],
        claim_next: Optional[int],
    ) -> View:
        path = f"/v1/tasks/{task_id}/{verb}"
        if claim_next is None:
            out: View = await self._write("POST", path, body, request_id)
            return out
        wait_ms = min(claim_next, MAX_WAIT_MS)
        body["claim_next"] = {"wait_ms": wait_ms}
        out = await self._write(
            "POST", path, body, request_id, safe=wait_ms == 0, wait_ms=wait_ms
        )
        return out

    def worker(
        self, session: "AsyncSession", *, wait_ms: int = 10_000,
        heartbeat_interval: Optional[float] = None,
    ) -> "AsyncWorker":
        """A worker loop claiming the session's tasks (see :class:`AsyncWorker`)."""
        return AsyncWorker(self, session, wait_ms=wait_ms, heartbeat_interval=heartbeat_interval)

    # ------------------------------------------------------------------ locks, semaphores

    async def acquire_lock(
        self, name: str, session_id: int, *, mode: str = "exclusive", wait_ms: int = 0,
        lock_delay_ms: Optional[int] = None, previous_token: Optional[int] = None,
    ) -> View:
        """``POST /v1/locks/{name}/acquire``. Sent without ``request_id`` (a retry
        resumes the session's grant or waiter)."""
        body = _opt(
            {"session_id": session_id, "mode": mode, "wait_ms": min(wait_ms, MAX_WAIT_MS)},
            lock_delay_ms=lock_delay_ms, previous_token=previous_token,
        )
        result: View = await self._write(
            "POST", f"/v1/locks/{_seg(name)}/acquire", body, idempotent=False, safe=True,
            wait_ms=body["wait_ms"],
        )
        return result

    async def release_lock(
        self, name: str, session_id: int, fencing_token: int, *, request_id: Optional[str] = None
    ) -> View:
        body = {"session_id": session_id, "fencing_token": fencing_token}
        result: View = await self._write("POST", f"/v1/locks/{_seg(name)}/release", body, request_id)
        return result

    async def get_lock(self, name: str) -> View:
        result: View = await self._get(f"/v1/locks/{_seg(name)}")
        return result

    def lock(
        self, name: str, session: "AsyncSession", *, mode: str = "exclusive",
        timeout: Optional[float] = None, lock_delay_ms: Optional[int] = None,
    ) -> "AsyncLock":
        """``async with client.lock(name, session) as lease:`` — holds the lock
        (waiting up to ``timeout`` seconds, forever if None; 0 tries once) and
        releases it on exit. ``lease.fencing_token``, ``lease.lost``."""
        return AsyncLock(self, "lock", name, session, mode=mode, timeout=timeout,
                         lock_delay_ms=lock_delay_ms)

    async def acquire_semaphore(
        self, name: str, session_id: int, *, limit: int, permits: int = 1, wait_ms: int = 0
    ) -> View:
        body = {"session_id": session_id, "limit": limit, "permits": permits,
                "wait_ms": min(wait_ms, MAX_WAIT_MS)}
        result: View = await self._write(
            "POST", f"/v1/semaphores/{_seg(name)}/acquire", body, idempotent=False, safe=True,
            wait_ms=body["wait_ms"],
        )
        return result

    async def release_semaphore(
        self, name: str, session_id: int, fencing_token: int, *, request_id: Optional[str] = None
    ) -> View:
        body = {"session_id": session_id, "fencing_token": fencing_token}
        result: View = await self._write(
            "POST", f"/v1/semaphores/{_seg(name)}/release", body, request_id
        )
        return result

    async def get_semaphore(self, name: str) -> View:
        result: View = await self._get(f"/v1/semaphores/{_seg(name)}")
        return result

    def semaphore(
        self, name: str, session: "AsyncSession", *, limit: int, permits: int = 1,
        timeout: Optional[float] = None,
    ) -> "AsyncLock":
        """Like :meth:`lock`, for ``permits`` of a semaphore of ``limit``."""
        return AsyncLock(self, "semaphore", name, session, timeout=timeout, limit=limit,
                         permits=permits)

    # ------------------------------------------------------------------ barriers, elections

    async def barrier_wait(
        self, name: str, session_id: int, parties: int, *, wait_ms: int = 0
    ) -> BarrierResult:
        """One arrival (no ``request_id``: not retried when its outcome is unknown)."""
        body = {"session_id": session_id, "parties": parties, "wait_ms": min(wait_ms, MAX_WAIT_MS)}
        r = await self._write(
            "POST", f"/v1/barriers/{_seg(name)}/wait", body, idempotent=False,
            wait_ms=body["wait_ms"],
        )
        return BarrierResult(int(r["generation"]), bool(r["released"]), bool(r["broken"]))

    async def get_barrier(self, name: str) -> View:
        result: View = await self._get(f"/v1/barriers/{_seg(name)}")
        return result

    def barrier(self, name: str, parties: int) -> "AsyncBarrier":
        return AsyncBarrier(self, name, parties)

    async def campaign(
        self, name: str, session_id: int, *, value: Json = None, priority: Optional[int] = None,
        wait_ms: int = 0,
    ) -> View:
        """``POST /v1/elections/{name}/campaign`` (the election's view; ``leader``
        says whether this session leads)."""
        body = _opt({"session_id": session_id, "value": value, "wait_ms": min(wait_ms, MAX_WAIT_MS)},
                    priority=priority)
        result: View = await self._write(
            "POST", f"/v1/elections/{_seg(name)}/campaign", body, idempotent=False, safe=True,
            wait_ms=body["wait_ms"],
        )
        return result

    async def resign(
        self, name: str, session_id: int, term: int, *, request_id: Optional[str] = None
    ) -> View:
        body = {"session_id": session_id, "term": term}
        result: View = await self._write("POST", f"/v1/elections/{_seg(name)}/resign", body, request_id)
        return result

    async def get_election(self, name: str) -> View:
        result: View = await self._get(f"/v1/elections/{_seg(name)}")
        return result

    def election(self, name: str, session: "AsyncSession") -> "AsyncElection":
        return AsyncElection(self, name, session)

    # ------------------------------------------------------------------ proposals

    async def create_proposal(
        self, title: str, voters: Sequence[Union[str, int]], *, rule: Json = "majority",
        deadline_ms: int = 60_000, payload: Json = None, voters_are_sessions: bool = False,
        retention_ms: Optional[int] = None, request_id: Optional[str] = None,
    ) -> int:
        body = _opt(
            {"title": title, "voters": list(voters), "rule": rule, "deadline_ms": deadline_ms,
             "payload": payload, "voters_are_sessions": voters_are_sessions},
            retention_ms=retention_ms,
        )
        result = await self._write("POST", "/v1/proposals", body, request_id)
        return int(result["proposal_id"])

    async def vote(
        self, proposal_id: int, voter: Union[str, int], vote: str, *,
        request_id: Optional[str] = None,
    ) -> View:
        """Votes ``yes``, ``no`` or ``abstain``."""
        body = {"voter": voter, "vote": vote}
        result: View = await self._write("POST", f"/v1/proposals/{proposal_id}/votes", body, request_id)
        return result

    async def get_proposal(self, proposal_id: int, *, wait_ms: Optional[int] = None) -> View:
        result: View = await self._get(
            f"/v1/proposals/{proposal_id}", {"wait_ms": wait_ms}, wait_ms=wait_ms or 0
        )
        return result

    async def wait_proposal(self, proposal_id: int, *, timeout: Optional[float] = None) -> View:
        """Blocks until the proposal is decided; its view. Raises :class:`Timeout`."""
        return await self._wait_decided(
            lambda w: self.get_proposal(proposal_id, wait_ms=w), "open", timeout
        )

    async def list_proposals(
        self, *, state: Optional[str] = None, voter: Optional[Union[str, int]] = None,
        awaiting: Optional[bool] = None,
    ) -> List[View]:
        return await self._pages(
            "/v1/proposals",
            {"state": state, "voter": voter, "awaiting": None if awaiting is None else str(awaiting).lower()},
        )

    async def _wait_decided(
        self, read: Callable[[int], Awaitable[View]], undecided: str, timeout: Optional[float]
    ) -> View:
        deadline = None if timeout is None else _acompat.monotonic() + timeout
        while True:
            left = MAX_WAIT_MS if deadline is None else int(max(0.0, deadline - _acompat.monotonic()) * 1000)
            view = await read(min(MAX_WAIT_MS, left))
            if view.get("state") != undecided:
                return view
            if deadline is not None and _acompat.monotonic() >= deadline:
                raise Timeout(f"still {undecided} after {timeout} s")

    # ------------------------------------------------------------------ txn, 2pc

    async def txn(
        self, compare: Sequence[View] = (), success: Sequence[View] = (),
        failure: Sequence[View] = (), *, request_id: Optional[str] = None,
    ) -> TxnResult:
        """``POST /v1/txn``: if every ``compare`` holds apply ``success``, else
        ``failure``, atomically. A refused op raises its code's error
        (``details["op_index"]``)."""
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        r = await self._write("POST", "/v1/txn", body, request_id)
        return TxnResult(bool(r["succeeded"]), int(r["index"]), list(r.get("results", [])))

    async def prepare_2pc(
        self, participants: Sequence[Union[str, int]], *, timeout_ms: int = 30_000,
        payload: Json = None, participants_are_sessions: bool = False,
        request_id: Optional[str] = None,
    ) -> int:
        """Starts a two-phase commit; returns its id."""
        body = {"participants": list(participants), "timeout_ms": timeout_ms, "payload": payload,
                "participants_are_sessions": participants_are_sessions}
        r = await self._write("POST", "/v1/2pc", body, request_id)
        return int(r["id"])

    async def vote_2pc(
        self, txn_id: int, participant: Union[str, int], vote: str, *,
        request_id: Optional[str] = None,
    ) -> View:
        """``vote`` is ``commit`` or ``abort``."""
        body = {"participant": participant, "vote": vote}
        result: View = await self._write("POST", f"/v1/2pc/{txn_id}/vote", body, request_id)
        return result

    async def ack_2pc(
        self, txn_id: int, participant: Union[str, int], *, request_id: Optional[str] = None
    ) -> View:
        result: View = await self._write(
            "POST", f"/v1/2pc/{txn_id}/ack", {"participant": participant}, request_id
        )
        return result

    async def get_2pc(self, txn_id: int, *, wait_ms: Optional[int] = None) -> View:
        result: View = await self._get(f"/v1/2pc/{txn_id}", {"wait_ms": wait_ms}, wait_ms=wait_ms or 0)
        return result

    async def wait_2pc(self, txn_id: int, *, timeout: Optional[float] = None) -> View:
        """Blocks until the transaction is decided; its view."""
        return await self._wait_decided(
            lambda w: self.get_2pc(txn_id, wait_ms=w), "preparing", timeout
        )

    async def list_2pc(
        self, *, participant: Optional[Union[str, int]] = None, awaiting: Optional[bool] = None,
        state: Optional[str] = None, wait_ms: Optional[int] = None,
    ) -> List[View]:
        """Transactions (one page); with ``participant`` and ``awaiting`` what
        awaits that participant, waiting up to ``wait_ms`` for something to."""
        params = {"participant": participant, "state": state, "wait_ms": wait_ms,
                  "awaiting": None if awaiting is None else str(awaiting).lower()}
        page = await self._get("/v1/2pc", params, wait_ms=wait_ms or 0)
        items: List[View] = page.get("items", [])
        return items

    # ------------------------------------------------------------------ watch

    def watch(
        self, *, types: Optional[Sequence[str]] = None, prefix: Optional[str] = None,
        session_id: Optional[int] = None, after: Optional[str] = None,
        from_index: Optional[int] = None, timeout_ms: Optional[int] = None,
        include_cluster: bool = False, reconnect_timeout: float = 30.0,
        read_timeout: float = 15.0,
    ) -> "AsyncWatch":
        """The event stream as an iterator of :class:`Event`; it resumes from the
        last id after a disconnect, on the next endpoint. Raises :class:`Lagged`,
        :class:`Compacted`."""
        return AsyncWatch(
            self, types=types, prefix=prefix, session_id=session_id, after=after,
            from_index=from_index, timeout_ms=timeout_ms, include_cluster=include_cluster,
            reconnect_timeout=reconnect_timeout, read_timeout=read_timeout,
        )


# ====================================================================== sessions


StateListener = Callable[[str], None]


class AsyncSession:
    """A session renewing itself in the background.

    ``state`` is ``live``; ``jeopardy`` once renewals have failed and less than
    ``safety_margin`` seconds remain before the local lease deadline; ``expired``
    once that deadline passed, the server said the session is gone, or it was
    ended (terminal). The local deadline is counted from when the last successful
    renewal was *sent*, so it never trails the server's expiry. ``history`` lists
    every state taken, ``expired`` is an event.
    """

    def __init__(
        self,
        client: AsyncClient,
        name: str,
        *,
        ttl_ms: int = 10_000,
        capabilities: Optional[Sequence[str]] = None,
        capacity: Optional[int] = None,
        metadata: Json = None,
        keepalive_interval: Optional[float] = None,
        safety_margin: Optional[float] = None,
    ) -> None:
        self.client = client
        self.name = name
        self.ttl_ms = ttl_ms
        self.capabilities = capabilities
        self.capacity = capacity
        self.metadata = metadata
        ttl = ttl_ms / 1000.0
        self.keepalive_interval = keepalive_interval if keepalive_interval else ttl / 3
        self.safety_margin = safety_margin if safety_margin else ttl / 2
        self._id: Optional[int] = None
        self.state = "new"
        self.history: List[str] = []
        self.expired = _acompat.Event()
        self.reason: Optional[str] = None
        self._stop = _acompat.Event()
        self._listeners: List[StateListener] = []
        self._deadline = 0.0
        self._loop: Optional[_acompat.Background] = None

    @property
    def id(self) -> int:
        if self._id is None:
            raise SessionExpired("the session is not open")
        return self._id

    @property
    def local_deadline(self) -> float:
        """``time.monotonic()`` instant before which the session surely lives."""
        return self._deadline

    def remaining(self) -> float:
        return max(0.0, self._deadline - _acompat.monotonic())

    def _lease(self, sent: float) -> float:
        # Cluster time may run 1 % fast (docs/api.md, Time).
        return sent + self.ttl_ms / 1000.0 * 0.99

    async def open(self) -> "AsyncSession":
        if self._id is not None:
            return self
        sent = _acompat.monotonic()
        body = await self.client.create_session(
            self.name, ttl_ms=self.ttl_ms, capabilities=self.capabilities,
            capacity=self.capacity, metadata=self.metadata,
        )
        self._id = int(body["session_id"])
        self._deadline = self._lease(sent)
        self._set(LIVE)
        self._loop = _acompat.spawn(self._renew_loop, f"conclave-session-{self._id}")
        return self

    def add_listener(self, listener: StateListener) -> None:
        """``listener(state)`` runs on every state change (in the renewing thread
        or task)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _set(self, state: str, reason: Optional[str] = None) -> None:
        if state == self.state or self.state == EXPIRED:
            return
        self.state = state
        self.history.append(state)
        if state == EXPIRED:
            self.reason = reason
            self._stop.set()
            self.expired.set()
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:  # a listener's bug must not stop renewals
                pass

    def check(self) -> None:
        """Raises :class:`SessionExpired` unless the session is live or in jeopardy."""
        if self.state == EXPIRED or self._id is None:
            raise SessionExpired(f"session {self._id} is {self.state} ({self.reason})")

    async def _renew_loop(self) -> None:
        interval = self.keepalive_interval
        next_at = _acompat.monotonic() + interval
        failing = False
        while not self._stop.is_set():
            now = _acompat.monotonic()
            if now >= self._deadline:
                self._set(EXPIRED, "local lease deadline passed")
                return
            if failing and now >= self._deadline - self.safety_margin:
                self._set(JEOPARDY)
            wake = min(next_at, self._deadline)
            if failing and self.state == LIVE:
                wake = min(wake, self._deadline - self.safety_margin)
            if now < wake:
                if await _acompat.wait_event(self._stop, wake - now):
                    return
                continue
            sent = _acompat.monotonic()
            try:
                await self.client.keepalive(
                    self.id, deadline=min(self._deadline, sent + max(interval, 0.5))
                )
            except SessionNotFound:
                if not self._stop.is_set():  # else end() is ending it
                    self._set(EXPIRED, "the server says the session is gone")
                return
            except Exception:
                failing = True
                next_at = _acompat.monotonic() + min(interval, 0.25)
                continue
            if self._stop.is_set():
                return
            self._deadline = max(self._deadline, self._lease(sent))
            failing = False
            self._set(LIVE)
            next_at = sent + interval

    async def end(self) -> None:
        """Stops renewing and ends the session on the server."""
        self._stop.set()
        if self._id is not None and self.state != EXPIRED:
            try:
                await self.client.end_session(self._id)
            finally:
                self._set(EXPIRED, "ended")

    async def __aenter__(self) -> "AsyncSession":
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        await self.end()


# ====================================================================== locks


class AsyncLease:
    """A held lock or semaphore grant. ``lost`` is set when the session expires or
    ends, or the release finds the grant gone."""

    def __init__(self, lock: "AsyncLock", fencing_token: int) -> None:
        self._lock = lock
        self.name = lock.name
        self.kind = lock.kind
        self.fencing_token = fencing_token
        self.lost = _acompat.Event()
        self.released = False

    @property
    def token(self) -> int:
        return self.fencing_token

    @property
    def guard(self) -> Dict[str, Any]:
        """A ``guard`` for KV and task writes protected by this grant."""
        return {self.kind: self.name, "fencing_token": self.fencing_token}

    def _on_state(self, state: str) -> None:
        if state == EXPIRED:
            self.lost.set()

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        session = self._lock.session
        session.remove_listener(self._on_state)
        if self.lost.is_set() or session.state == EXPIRED:
            self.lost.set()
            return
        client = self._lock.client
        try:
            if self.kind == "lock":
                await client.release_lock(self.name, session.id, self.fencing_token)
            else:
                await client.release_semaphore(self.name, session.id, self.fencing_token)
        except (StaleFencingToken, WrongState, SessionNotFound):
            self.lost.set()


class AsyncLock:
    """``async with`` acquires (waiting per ``timeout``) and releases; raises
    :class:`LockHeld` / :class:`PermitsUnavailable` when the timeout passes."""

    def __init__(
        self, client: AsyncClient, kind: str, name: str, session: AsyncSession, *,
        mode: str = "exclusive", timeout: Optional[float] = None,
        lock_delay_ms: Optional[int] = None, limit: int = 0, permits: int = 1,
    ) -> None:
        self.client = client
        self.kind = kind
        self.name = name
        self.session = session
        self.mode = mode
        self.timeout = timeout
        self.lock_delay_ms = lock_delay_ms
        self.limit = limit
        self.permits = permits
        self.lease: Optional[AsyncLease] = None

    async def acquire(self) -> AsyncLease:
        deadline = None if self.timeout is None else _acompat.monotonic() + self.timeout
        while True:
            self.session.check()
            if deadline is None:
                wait_ms = MAX_WAIT_MS
            else:
                wait_ms = int(max(0.0, deadline - _acompat.monotonic()) * 1000)
            try:
                if self.kind == "lock":
                    body = await self.client.acquire_lock(
                        self.name, self.session.id, mode=self.mode, wait_ms=wait_ms,
                        lock_delay_ms=self.lock_delay_ms,
                    )
                else:
                    body = await self.client.acquire_semaphore(
                        self.name, self.session.id, limit=self.limit, permits=self.permits,
                        wait_ms=wait_ms,
                    )
            except (LockHeld, PermitsUnavailable):
                if deadline is not None and _acompat.monotonic() >= deadline:
                    raise
                continue
            lease = AsyncLease(self, int(body["fencing_token"]))
            self.session.add_listener(lease._on_state)
            if self.session.state == EXPIRED:
                lease.lost.set()
            self.lease = lease
            return lease

    async def __aenter__(self) -> AsyncLease:
        return await self.acquire()

    async def __aexit__(self, *exc: Any) -> None:
        if self.lease is not None:
            await self.lease.release()


# ====================================================================== elections, barriers


class AsyncLeadership:
    """Leadership of an election under ``term`` (its fencing token); ``lost`` is
    set when the session expires or ends. ``async with`` resigns on exit."""

    def __init__(self, election: "AsyncElection", term: int, value: Json) -> None:
        self._election = election
        self.name = election.name
        self.term = term
        self.value = value
        self.lost = _acompat.Event()
        self.resigned = False

    @property
    def guard(self) -> Dict[str, Any]:
        return {"election": self.name, "fencing_token": self.term}

    def _on_state(self, state: str) -> None:
        if state == EXPIRED:
            self.lost.set()

    async def resign(self) -> None:
        if self.resigned:
            return
        self.resigned = True
        session = self._election.session
        session.remove_listener(self._on_state)
        if self.lost.is_set() or session.state == EXPIRED:
            self.lost.set()
            return
        try:
            await self._election.client.resign(self.name, session.id, self.term)
        except (StaleFencingToken, WrongState, SessionNotFound):
            self.lost.set()

    async def __aenter__(self) -> "AsyncLeadership":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.resign()


class AsyncElection:
    def __init__(self, client: AsyncClient, name: str, session: AsyncSession) -> None:
        self.client = client
        self.name = name
        self.session = session

    async def campaign(
        self, value: Json = None, *, priority: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> AsyncLeadership:
        """Becomes leader, waiting up to ``timeout`` seconds (forever if None; 0
        tries once); raises :class:`Timeout` if not elected."""
        deadline = None if timeout is None else _acompat.monotonic() + timeout
        while True:
            self.session.check()
            wait_ms = MAX_WAIT_MS if deadline is None else int(
                max(0.0, deadline - _acompat.monotonic()) * 1000)
            view = await self.client.campaign(
                self.name, self.session.id, value=value, priority=priority, wait_ms=wait_ms
            )
            if view.get("leader"):
                leadership = AsyncLeadership(self, int(view["term"]), view.get("value"))
                self.session.add_listener(leadership._on_state)
                if self.session.state == EXPIRED:
                    leadership.lost.set()
                return leadership
            if deadline is not None and _acompat.monotonic() >= deadline:
                raise Timeout(f"not elected in {self.name!r} within {timeout} s")

    async def leader(self) -> View:
        """The election's view: ``leader_session_id``, ``term``, ``value``, ..."""
        return await self.client.get_election(self.name)


class AsyncBarrier:
    def __init__(self, client: AsyncClient, name: str, parties: int) -> None:
        self.client = client
        self.name = name
        self.parties = parties

    async def wait(self, session: AsyncSession, *, timeout: Optional[float] = None) -> BarrierResult:
        """Arrives and waits until ``parties`` sessions have; raises
        :class:`BarrierBroken` or :class:`Timeout`."""
        deadline = None if timeout is None else _acompat.monotonic() + timeout
        while True:
            session.check()
            wait_ms = MAX_WAIT_MS if deadline is None else int(
                max(0.0, deadline - _acompat.monotonic()) * 1000)
            result = await self.client.barrier_wait(
                self.name, session.id, self.parties, wait_ms=wait_ms
            )
            if result.broken:
                raise BarrierBroken(self.name, result.generation)
            if result.released:
                return result
            if deadline is not None and _acompat.monotonic() >= deadline:
                raise Timeout(f"barrier {self.name!r} not released within {timeout} s")


# ====================================================================== tasks


class AsyncTask:
    """A claimed task, heart-beaten in the background until it is finished.

    ``cancelled`` is set when a heartbeat says it was cancelled (stop working; it
    is no longer yours), ``lost`` when the lease went to someone else. Use
    ``async with task:`` to complete it with ``task.result`` on a normal exit and
    fail it on an exception (which is then suppressed)."""

    def __init__(
        self, client: AsyncClient, session: AsyncSession, claim: Claim,
        heartbeat_interval: Optional[float] = None,
    ) -> None:
        self.client = client
        self.session = session
        self.claim = claim
        self.id = claim.task_id
        self.kind: str = claim.task.get("kind", "")
        self.payload: Json = claim.task.get("payload")
        self.fencing_token = claim.fencing_token
        self.lease_ms = int(claim.task.get("lease_ms", 30_000))
        self.heartbeat_interval = heartbeat_interval or self.lease_ms / 3000.0
        self.cancelled = _acompat.Event()
        self.lost = _acompat.Event()
        self.result: Json = None
        self.progress: Json = None
        self.done = False
        self.outcome: Optional[str] = None
        self._hb_stop = _acompat.Event()
        self._hb: Optional[_acompat.Background] = None

    def _start(self) -> None:
        self._hb = _acompat.spawn(self._heartbeats, f"conclave-task-{self.id}")

    def _stop_heartbeats(self) -> None:
        self._hb_stop.set()

    async def _heartbeats(self) -> None:
        while not await _acompat.wait_event(self._hb_stop, self.heartbeat_interval):
            try:
                r = await self.client.heartbeat(self.id, self.fencing_token, progress=self.progress)
            except (StaleFencingToken, WrongState, TaskNotFound):
                self.lost.set()
                return
            except Exception:
                continue
            if r.get("cancel_requested"):
                self.cancelled.set()
                return

    async def beat(self) -> bool:
        """A heartbeat now (sends ``progress``); False when the task was cancelled."""
        r = await self.client.heartbeat(self.id, self.fencing_token, progress=self.progress)
        if r.get("cancel_requested"):
            self.cancelled.set()
            return False
        return True

    async def complete(self, result: Json = None) -> None:
        self._stop_heartbeats()
        if self.done:
            return
        self.done = True
        if self.cancelled.is_set():
            self.outcome = "cancelled"
            return
        try:
            await self.client.complete_task(self.id, self.fencing_token, result)
            self.outcome = "succeeded"
        except WrongState:
            if await self._was_cancelled():
                return
            raise

    async def fail(self, error: str, *, retryable: bool = True) -> None:
        self._stop_heartbeats()
        if self.done:
            return
        self.done = True
        if self.cancelled.is_set():
            self.outcome = "cancelled"
            return
        try:
            await self.client.fail_task(self.id, self.fencing_token, error, retryable=retryable)
            self.outcome = "failed"
        except WrongState:
            if await self._was_cancelled():
                return
            raise

    async def _was_cancelled(self) -> bool:
        view = await self.client.get_task(self.id)
        if view.get("cancel_requested"):
            self.cancelled.set()
            self.outcome = "cancelled"
            return True
        return False

    async def __aenter__(self) -> "AsyncTask":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc is None:
            await self.complete(self.result)
            return False
        if isinstance(exc, Exception):
            await self.fail(f"{type(exc).__name__}: {exc}")
            return True
        self._stop_heartbeats()
        return False


Handler = Callable[[AsyncTask], Awaitable[Any]]


class AsyncWorker:
    """Claims the session's tasks with a long poll (``wait_ms``).

    ``async for task in worker.tasks():`` yields each claimed task, heart-beaten
    until finished; when the loop moves on, a task not finished yet is completed
    with ``task.result``. ``run(handler)`` completes each task with the
    handler's return value, or fails it when the handler raises. Stops when the
    session expires or :meth:`stop` is called (after the current claim's wait)."""

    def __init__(
        self, client: AsyncClient, session: AsyncSession, *, wait_ms: int = 10_000,
        heartbeat_interval: Optional[float] = None,
    ) -> None:
        self.client = client
        self.session = session
        self.wait_ms = wait_ms
        self.heartbeat_interval = heartbeat_interval
        self._stopped = _acompat.Event()
        self.processed = 0

    def stop(self) -> None:
        self._stopped.set()

    async def tasks(self, *, max_tasks: Optional[int] = None) -> AsyncIterator[AsyncTask]:
        backoff = Backoff(0.05, 1.0)
        while not self._stopped.is_set() and self.session.state != EXPIRED:
            try:
                claim = await self.client.claim(self.session.id, wait_ms=self.wait_ms)
            except SessionNotFound:
                return
            except (Unavailable, Indeterminate):
                await _acompat.sleep(backoff.next())
                continue
            if claim is None:
                continue
            task = AsyncTask(self.client, self.session, claim, self.heartbeat_interval)
            task._start()
            try:
                yield task
            finally:
                task._stop_heartbeats()
            if not task.done:
                await task.complete(task.result)
            self.processed += 1
            if max_tasks is not None and self.processed >= max_tasks:
                return

    async def run(self, handler: Handler, *, max_tasks: Optional[int] = None) -> int:
        """Runs ``handler(task)`` for every task; returns how many it processed."""
        async for task in self.tasks(max_tasks=max_tasks):
            async with task:
                task.result = await handler(task)
        return self.processed


# ====================================================================== watch


class _Reconnect(Exception):
    pass


class AsyncWatch:
    """Iterates watch events. ``last_id`` is the id of the last event delivered;
    after a disconnect the stream reconnects (to the next endpoint) with
    ``Last-Event-ID``, so no event is missed or repeated. ``endpoints_used`` lists
    the nodes it streamed from."""

    def __init__(
        self, client: AsyncClient, *, types: Optional[Sequence[str]], prefix: Optional[str],
        session_id: Optional[int], after: Optional[str], from_index: Optional[int],
        timeout_ms: Optional[int], include_cluster: bool, reconnect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.client = client
        self.types = types
        self.prefix = prefix
        self.session_id = session_id
        self.last_id = after
        self.from_index = from_index
        self.timeout_ms = timeout_ms
        self.include_cluster = include_cluster
        self.reconnect_timeout = reconnect_timeout
        self.read_timeout = read_timeout
        self.endpoints_used: List[str] = []
        self.reconnects = 0
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    def _params(self, end_at: Optional[float]) -> Tuple[Dict[str, Any], Dict[str, str]]:
        params: Dict[str, Any] = {}
        headers: Dict[str, str] = {"Accept": "text/event-stream"}
        if self.types:
            params["types"] = ",".join(self.types)
        if self.prefix is not None:
            params["prefix"] = self.prefix
        if self.session_id is not None:
            params["session_id"] = self.session_id
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        elif self.from_index is not None:
            params["from_index"] = self.from_index
        if end_at is not None:
            params["timeout_ms"] = max(1, int((end_at - _acompat.monotonic()) * 1000))
        return params, headers

    async def _events(self) -> AsyncIterator[Event]:
        end_at = None
        if self.timeout_ms is not None:
            end_at = _acompat.monotonic() + self.timeout_ms / 1000.0
        url = self.client._router.pick()
        failing_since: Optional[float] = None
        backoff = Backoff(0.05, 1.0)
        while not self._closed:
            if end_at is not None and _acompat.monotonic() >= end_at:
                return
            params, headers = self._params(end_at)
            try:
                async with self.client._http.stream(
                    "GET", url + "/v1/watch", params=params, headers=headers,
                    timeout=httpx.Timeout(self.read_timeout, connect=self.client.connect_timeout),
                ) as resp:
                    if resp.status_code != 200:
                        await resp.aread()
                        try:
                            body = json.loads(resp.content) if resp.content else None
                        except ValueError:
                            body = None
                        err = error_from(resp.status_code, body)
                        if resp.status_code in (429, 503) or resp.status_code >= 500:
                            raise _Reconnect(str(err))
                        raise err
                    self.endpoints_used.append(url)
                    failing_since = None
                    backoff = Backoff(0.05, 1.0)
                    parser = SseParser()
                    async for line in resp.aiter_lines():
                        frame = parser.feed(line)
                        if frame is None or frame[0] != "event":
                            self._note_start(frame)
                            continue
                        _, event_id, event_type, data = frame  # type: ignore[misc]
                        event = Event.parse(event_id, event_type, data)
                        if event.type == "lagged":
                            raise Lagged(event.data.get("last_event_id"), event.data.get("from_index"))
                        if event.id is None:
                            if self.include_cluster and event.type == "cluster":
                                yield event
                            continue
                        self.last_id = event.id
                        yield event
                        if self._closed:
                            return
            except (httpx.TransportError, _Reconnect):
                pass
            if self._closed:
                return
            # The stream ended (node lost, or its timeout): resume on the next node.
            now = _acompat.monotonic()
            if end_at is not None and now >= end_at - 0.05:
                return
            if failing_since is None:
                failing_since = now
            elif now - failing_since > self.reconnect_timeout:
                raise Unavailable(0, "watch_unavailable", f"no node served the watch for {self.reconnect_timeout} s")
            url = self.client._router.next_for_watch(url)
            self.reconnects += 1
            await _acompat.sleep(backoff.next())

    def _note_start(self, frame: Any) -> None:
        # ": watching from I.S" — where a stream opened without a start begins, so
        # a reconnect before the first event still misses nothing.
        if not frame or frame[0] != "comment" or self.last_id is not None or self.from_index is not None:
            return
        text = str(frame[1])
        if text.startswith("watching from "):
            index, _, seq = text[len("watching from "):].partition(".")
            if index.isdigit() and seq.isdigit():
                if int(seq) == 0:
                    self.from_index = int(index)
                else:
                    self.last_id = f"{index}.{int(seq) - 1}"
