"""Conclave client: ``Client`` (blocking, background threads) and ``AsyncClient``
(asyncio) with the same methods. See clients/python/README.md."""

from ._aclient import (
    AsyncBarrier,
    AsyncClient,
    AsyncElection,
    AsyncLeadership,
    AsyncLease,
    AsyncLock,
    AsyncSession,
    AsyncTask,
    AsyncWatch,
    AsyncWorker,
    new_request_id,
)
from ._client import (
    Barrier,
    Client,
    Election,
    Leadership,
    Lease,
    Lock,
    Session,
    Task,
    Watch,
    Worker,
)
from ._errors import (
    AlreadyVoted,
    ApiError,
    BadRequest,
    BarrierBroken,
    CasMismatch,
    Compacted,
    ConclaveError,
    Conflict,
    Deadlock,
    Forbidden,
    Indeterminate,
    KeyNotFound,
    Lagged,
    LimitMismatch,
    LockHeld,
    NotFound,
    Overloaded,
    PermitsUnavailable,
    RequestIdConflict,
    SessionExpired,
    SessionNotFound,
    StaleFencingToken,
    TaskNotFound,
    Timeout,
    Unauthenticated,
    Unavailable,
    WrongState,
)
from ._models import EXPIRED, JEOPARDY, LIVE, BarrierResult, Claim, Event, KeyValue, TxnResult

__all__ = [
    "AsyncBarrier", "AsyncClient", "AsyncElection", "AsyncLeadership", "AsyncLease",
    "AsyncLock", "AsyncSession", "AsyncTask", "AsyncWatch", "AsyncWorker",
    "Barrier", "Client", "Election", "Leadership", "Lease", "Lock", "Session", "Task",
    "Watch", "Worker", "new_request_id",
    "AlreadyVoted", "ApiError", "BadRequest", "BarrierBroken", "CasMismatch", "Compacted",
    "ConclaveError", "Conflict", "Deadlock", "Forbidden", "Indeterminate", "KeyNotFound",
    "Lagged", "LimitMismatch", "LockHeld", "NotFound", "Overloaded", "PermitsUnavailable",
    "RequestIdConflict", "SessionExpired", "SessionNotFound", "StaleFencingToken",
    "TaskNotFound", "Timeout", "Unauthenticated", "Unavailable", "WrongState",
    "EXPIRED", "JEOPARDY", "LIVE", "BarrierResult", "Claim", "Event", "KeyValue", "TxnResult",
]
__version__ = "0.1.0"
