//! The lock command: what a lock acquire, release or withdrawal carries in the log.
//! It depends only on the lock mode and session ids.

use serde::{Deserialize, Serialize};

use super::LockMode;
use crate::sm::sessions::SessionId;

/// A state-changing lock operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCommand {
    /// Acquires `name` for the session; if it cannot be granted now and `wait`,
    /// queues a waiter (refused if waiting would close a cycle of sessions).
    /// `lock_delay_ms` is taken from the acquire that creates the lock;
    /// `previous_token` lets an expired holder re-acquire during its lock-delay.
    Acquire {
        name: String,
        session_id: SessionId,
        mode: LockMode,
        wait: bool,
        lock_delay_ms: u64,
        previous_token: Option<u64>,
    },
    Release {
        name: String,
        session_id: SessionId,
        fencing_token: u64,
    },
    /// Withdraws a waiter whose wait ended (or whose client left).
    Withdraw { name: String, waiter_id: u64 },
}

impl LockCommand {
    /// A cheap estimate of the variable part of its encoded size, in bytes.
    pub fn size_hint(&self) -> usize {
        match self {
            Self::Acquire { name, .. }
            | Self::Release { name, .. }
            | Self::Withdraw { name, .. } => name.len(),
        }
    }
}

/// What applying a lock command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOutcome {
    Granted {
        fencing_token: u64,
    },
    /// Queued; the waiter id is this command's index.
    Queued {
        waiter_id: u64,
    },
    /// Held by others and the request did not wait (or its waiter was withdrawn).
    Held,
    /// Waiting would close this cycle of sessions (first = last = the requester).
    Deadlock {
        cycle: Vec<SessionId>,
    },
    Released,
}
