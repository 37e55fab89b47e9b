"""Exceptions: every error answer of the server becomes an :class:`ApiError`
(or a subclass named after its ``code``); transport failures become
:class:`Unavailable` (definitely not applied) or :class:`Indeterminate` (may have
been applied)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


class ConclaveError(Exception):
    """Base class of everything this package raises."""


class ApiError(ConclaveError):
    """An error answer: ``{"error": {"code", "message", ...details}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Optional[Dict[str, Any]] = None,
        request_id: Optional[str] = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: Dict[str, Any] = dict(details or {})
        self.request_id = request_id


class Unavailable(ApiError):
    """503 (``no_leader``, ``unavailable``) or no endpoint could be reached, until
    the client's timeout: the request was **not** applied."""


class Indeterminate(ApiError):
    """504, or the connection failed after the request was sent, and it could not be
    retried safely (no ``request_id``) or the retries ran out: the write may or may
    not have been applied. Resolve with ``client.request_status(request_id)``."""


class Timeout(ConclaveError, TimeoutError):
    """A helper's own deadline passed (a lock, an election, a barrier, a decision)."""


class BarrierBroken(ConclaveError):
    """A barrier generation was broken: a session that had arrived ended."""

    def __init__(self, name: str, generation: int) -> None:
        super().__init__(f"barrier {name!r} generation {generation} was broken")
        self.name = name
        self.generation = generation


class Lagged(ConclaveError):
    """The watch consumer fell behind the node's history (``event: lagged``)."""

    def __init__(self, last_event_id: Optional[str], from_index: Optional[int]) -> None:
        super().__init__(f"watch lagged after {last_event_id}")
        self.last_event_id = last_event_id
        self.from_index = from_index


class SessionExpired(ConclaveError):
    """The helper's session is expired (locally or on the server)."""


# One subclass per code a caller is likely to catch.
class BadRequest(ApiError):
    pass


class Unauthenticated(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class KeyNotFound(NotFound):
    pass


class SessionNotFound(NotFound):
    pass


class TaskNotFound(NotFound):
    pass


class CasMismatch(Conflict):
    @property
    def current_version(self) -> int:
        return int(self.details.get("current_version", 0))


class LockHeld(Conflict):
    pass


class Deadlock(Conflict):
    pass


class PermitsUnavailable(Conflict):
    pass


class LimitMismatch(Conflict):
    pass


class WrongState(Conflict):
    pass


class StaleFencingToken(Conflict):
    @property
    def current_token(self) -> int:
        return int(self.details.get("current_token", 0))


class RequestIdConflict(Conflict):
    pass


class AlreadyVoted(Conflict):
    pass


class Compacted(ApiError):
    """410: the watch's start is older than the node's history."""

    @property
    def oldest_index(self) -> int:
        return int(self.details.get("oldest_index", 0))


class Overloaded(ApiError):
    pass


_BY_CODE: Dict[str, Type[ApiError]] = {
    "no_leader": Unavailable,
    "unavailable": Unavailable,
    "indeterminate": Indeterminate,
    "unauthenticated": Unauthenticated,
    "token_expired": Unauthenticated,
    "forbidden": Forbidden,
    "not_session_owner": Forbidden,
    "key_not_found": KeyNotFound,
    "session_not_found": SessionNotFound,
    "task_not_found": TaskNotFound,
    "cas_mismatch": CasMismatch,
    "lock_held": LockHeld,
    "deadlock": Deadlock,
    "permits_unavailable": PermitsUnavailable,
    "limit_mismatch": LimitMismatch,
    "wrong_state": WrongState,
    "stale_fencing_token": StaleFencingToken,
    "request_id_conflict": RequestIdConflict,
    "already_voted": AlreadyVoted,
    "compacted": Compacted,
    "overloaded": Overloaded,
    "too_many_watchers": Overloaded,
    "rate_limited": Overloaded,
}

_BY_STATUS: Dict[int, Type[ApiError]] = {
    400: BadRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: Overloaded,
    503: Unavailable,
    504: Indeterminate,
}


def error_from(
    status: int, body: Any, request_id: Optional[str] = None
) -> ApiError:
    """The exception for an error answer (``body`` is the parsed JSON, or None)."""
    code = f"http_{status}"
    message = ""
    details: Dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code", code))
        message = str(err.get("message", ""))
        details = {k: v for k, v in err.items() if k not in ("code", "message")}
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or ApiError
    return cls(status, code, message, details, request_id)
