//! The replicated vocabulary: what a log entry carries and what applying it returns.
//!
//! A Raft log entry is a [`Batch`]: the leader's clock reading plus the commands the
//! proposer coalesced. Each command gets its own *command index*, its position in the
//! replicated command sequence; that is the `index` / `version` / fencing token the
//! API speaks of. These types are encoded with bincode (see `codec`), so they avoid
//! serde attributes bincode cannot round-trip.

use serde::{Deserialize, Serialize};

use super::barriers::{BarrierCommand, BarrierOutcome};
use super::elections::{ElectionCommand, ElectionOutcome};
use super::kv::{KvCommand, KvOutcome};
use super::locks::{LockCommand, LockOutcome};
use super::proposals::{ProposalCommand, ProposalOutcome};
use super::semaphores::{SemaphoreCommand, SemaphoreOutcome};
use super::sessions::{SessionCommand, SessionId, SessionOutcome};
use super::tasks::{TaskCommand, TaskOutcome};
use super::twophase::{TwoPhaseCommand, TwoPhaseOutcome};
use super::txn::{TxnCommand, TxnOutcome};

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
    /// The token subject of a caller held to its own sessions: a command that acts
    /// for a session another subject created is refused
    /// ([`Refusal::NotSessionOwner`]). `None` for `admin`, an open node and the
    /// node's own commands (ticks, withdrawals of its waiters).
    pub acting_as: Option<String>,
    pub command: Command,
}

impl Submission {
    /// A cheap estimate of its encoded size, for the proposer's batch byte bound.
    pub fn size_hint(&self) -> usize {
        32 + self.command.size_hint()
            + self.request_id.as_ref().map_or(0, String::len)
            + self.acting_as.as_ref().map_or(0, String::len)
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
            Self::Proposal(command) => command.size_hint(),
            Self::TwoPhase(command) => command.size_hint(),
            Self::Txn(command) => command.size_hint(),
            Self::Upgrade { .. } => 0,
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
    /// A proposal's creation or a vote (`sm::proposals`).
    Proposal(ProposalCommand),
    /// A two-phase commit's creation, vote or ack (`sm::twophase`).
    TwoPhase(TwoPhaseCommand),
    /// An atomic transaction over other rooms' commands (`sm::txn`).
    Txn(TxnCommand),
    /// Proposed by the leader once every member speaks `format` (format 8 on;
    /// `sm::format`): the state moves to it. Takes no command index (clients never
    /// see it) and answers `Outcome::Upgraded`.
    Upgrade { format: u32 },
}

/// What applying one command did: its room's outcome, or a refusal any room may
/// answer. Refusals are outcomes, not errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Kv(KvOutcome),
    Session(SessionOutcome),
    Task(TaskOutcome),
    Lock(LockOutcome),
    Semaphore(SemaphoreOutcome),
    Barrier(BarrierOutcome),
    Election(ElectionOutcome),
    Proposal(ProposalOutcome),
    TwoPhase(TwoPhaseOutcome),
    Txn(TxnOutcome),
    Refused(Refusal),
    /// `Command::Upgrade` was applied: the state's format now.
    Upgraded {
        format: u32,
    },
}

/// A refusal shared by the rooms: nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The `request_id` was already used for a *different* command (applied at
    /// `Applied::index`); nothing was applied. Never recorded.
    RequestIdConflict,
    SessionNotFound {
        session_id: SessionId,
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
    /// The command acts for a session another token subject created. Never
    /// recorded against its `request_id` (the owner may still use the id).
    NotSessionOwner {
        session_id: SessionId,
    },
    /// The command votes or acks as a named voter or participant that is not the
    /// token subject it acts as. Never recorded against its `request_id`.
    NotTheParty {
        party: String,
    },
}

impl Outcome {
    /// The waiter id, when a waiting acquire (lock, semaphore, campaign) queued.
    pub fn queued_waiter(&self) -> Option<u64> {
        match self {
            Outcome::Lock(LockOutcome::Queued { waiter_id })
            | Outcome::Semaphore(SemaphoreOutcome::Queued { waiter_id })
            | Outcome::Election(ElectionOutcome::Queued { waiter_id }) => Some(*waiter_id),
            _ => None,
        }
    }

    /// The fencing token (an election's term), when a lock, semaphore or
    /// leadership was granted.
    pub fn granted_token(&self) -> Option<u64> {
        match self {
            Outcome::Lock(LockOutcome::Granted { fencing_token })
            | Outcome::Semaphore(SemaphoreOutcome::Granted { fencing_token }) => {
                Some(*fencing_token)
            }
            Outcome::Election(ElectionOutcome::Elected { term }) => Some(*term),
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
