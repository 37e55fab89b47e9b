//! The replicated vocabulary: what a log entry carries and what applying it returns.
//!
//! A Raft log entry is a [`Batch`]: the leader's clock reading plus the commands the
//! proposer coalesced. Each command gets its own *command index*, its position in the
//! replicated command sequence; that is the `index` / `version` / fencing token the
//! API speaks of. These types are encoded with bincode (see `codec`), so they avoid
//! serde attributes bincode cannot round-trip.

use serde::{Deserialize, Serialize};

use super::barriers::BarrierCommand;
use super::elections::ElectionCommand;
use super::kv::KvCommand;
use super::locks::LockCommand;
use super::semaphores::SemaphoreCommand;
use super::sessions::{SessionCommand, SessionId};
use super::tasks::{TaskCommand, TaskId, TaskState};

/// One Raft log entry's payload: commands stamped with the proposing leader's time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The proposing leader's wall clock, ms since the Unix epoch. The state machine
    /// never lets cluster time go backwards, whatever this says.
    pub leader_time_ms: u64,
    pub submissions: Vec<Submission>,
}

/// A command with its optional client-chosen idempotency key and fencing guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    pub request_id: Option<String>,
    /// Apply the command only while this fencing token is current (checked in the
    /// same step as the command, so a paused ex-holder's late write is refused).
    pub guard: Option<Guard>,
    pub command: Command,
}

impl Submission {
    /// A cheap estimate of its encoded size, for the proposer's batch byte bound.
    pub fn size_hint(&self) -> usize {
        32 + self.command.size_hint() + self.request_id.as_ref().map_or(0, String::len)
    }
}

impl Command {
    /// A cheap estimate of the variable part of its encoded size, in bytes.
    pub fn size_hint(&self) -> usize {
        match self {
            Self::Kv(command) => command.size_hint(),
            Self::Session(command) => command.size_hint(),
            Self::Tick { renewals } => renewals.len() * 16,
            Self::Task(command) => command.size_hint(),
            Self::Lock(command) => command.size_hint(),
            Self::Semaphore(command) => command.size_hint(),
            Self::Barrier(command) => command.size_hint(),
            Self::Election(command) => command.size_hint(),
        }
    }
}

/// A fencing condition: `fencing_token` must be current for the resource: a hold of
/// the lock, a permit of the semaphore, or the election's leader term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    pub kind: GuardKind,
    pub name: String,
    pub fencing_token: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuardKind {
    Lock,
    Semaphore,
    Election,
}

/// Every state-changing operation the state machine knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A key/value write (`sm::kv`).
    Kv(KvCommand),
    /// A session operation (`sm::sessions`).
    Session(SessionCommand),
    /// Proposed by the leader's ticker: carries time forward (expiring what is due
    /// at the batch's cluster time) and the keepalives the leader accepted since the
    /// last tick, each with the cluster time it was accepted at.
    Tick { renewals: Vec<(SessionId, u64)> },
    /// A task operation (`sm::tasks`).
    Task(TaskCommand),
    /// A lock acquire, release or withdrawal (`sm::locks`).
    Lock(LockCommand),
    /// A semaphore acquire, release or withdrawal (`sm::semaphores`).
    Semaphore(SemaphoreCommand),
    /// A barrier wait or leave (`sm::barriers`).
    Barrier(BarrierCommand),
    /// An election campaign, resignation or withdrawal (`sm::elections`).
    Election(ElectionCommand),
}

/// What applying one command did. Refusals are outcomes, not errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The key now holds the value at `version` (the command index).
    KvWritten {
        version: u64,
    },
    /// The key was deleted (`existed: false` when there was nothing to delete).
    KvDeleted {
        existed: bool,
    },
    /// A compare-and-set precondition failed; `current_version` is 0 when absent.
    CasMismatch {
        current_version: u64,
    },
    /// The `request_id` was already used for a *different* command (applied at
    /// `Applied::index`); nothing was applied. Never recorded.
    RequestIdConflict,
    SessionCreated {
        session_id: SessionId,
        expires_at_ms: u64,
    },
    SessionRenewed {
        expires_at_ms: u64,
    },
    SessionEnded,
    Ticked {
        renewed: u32,
    },
    /// `existing`: an earlier submit with the same idempotency key.
    TaskSubmitted {
        task_id: TaskId,
        state: TaskState,
        existing: bool,
    },
    TaskClaimed {
        task_id: TaskId,
        fencing_token: u64,
        lease_expires_at_ms: u64,
    },
    NoTaskAssigned,
    TaskLeaseExtended {
        lease_expires_at_ms: u64,
        cancel_requested: bool,
    },
    TaskUpdated {
        task_id: TaskId,
        state: TaskState,
    },
    SessionNotFound {
        session_id: SessionId,
    },
    TaskNotFound {
        task_id: TaskId,
    },
    WrongState {
        message: String,
    },
    StaleFencingToken {
        current: u64,
    },
    LimitReached {
        message: String,
    },
    InvalidCommand {
        message: String,
    },
    LockGranted {
        fencing_token: u64,
    },
    /// Queued; the waiter id is this command's index.
    LockQueued {
        waiter_id: u64,
    },
    /// Held by others and the request did not wait (or its waiter was withdrawn).
    LockHeld,
    /// Waiting would close this cycle of sessions (first = last = the requester).
    Deadlock {
        cycle: Vec<SessionId>,
    },
    LockReleased,
    PermitsGranted {
        fencing_token: u64,
    },
    PermitsQueued {
        waiter_id: u64,
    },
    /// Not enough free permits and the request did not wait (or was withdrawn).
    PermitsUnavailable,
    /// The semaphore exists with another limit.
    LimitMismatch {
        limit: u32,
    },
    PermitsReleased,
    BarrierReleased {
        generation: u64,
    },
    BarrierWaiting {
        generation: u64,
    },
    /// The generation ended without release (a participant's session ended).
    BarrierBroken {
        generation: u64,
    },
    /// This session leads `name` with term (fencing token) `term`.
    Elected {
        term: u64,
    },
    CampaignQueued {
        waiter_id: u64,
    },
    /// Someone else leads and the request did not wait (or was withdrawn).
    NotElected {
        leader_session_id: Option<SessionId>,
        term: u64,
    },
    Resigned,
    Withdrawn,
}

impl Outcome {
    /// The waiter id, when a waiting acquire (lock, semaphore, campaign) queued.
    pub fn queued_waiter(&self) -> Option<u64> {
        match self {
            Outcome::LockQueued { waiter_id }
            | Outcome::PermitsQueued { waiter_id }
            | Outcome::CampaignQueued { waiter_id } => Some(*waiter_id),
            _ => None,
        }
    }

    /// The fencing token (an election's term), when a lock, semaphore or
    /// leadership was granted.
    pub fn granted_token(&self) -> Option<u64> {
        match self {
            Outcome::LockGranted { fencing_token } | Outcome::PermitsGranted { fencing_token } => {
                Some(*fencing_token)
            }
            Outcome::Elected { term } => Some(*term),
            _ => None,
        }
    }
}

/// One command's result: its command index and outcome. A retried `request_id`
/// returns the first `Applied` unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
    pub outcome: Outcome,
}

/// The results of one log entry, one per submission and in the same order. Blank and
/// membership entries produce an empty response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub results: Vec<Applied>,
}
