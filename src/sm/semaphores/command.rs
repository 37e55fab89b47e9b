//! The semaphore command: what a permit acquire, release or withdrawal carries in
//! the log. It depends only on session ids.

use serde::{Deserialize, Serialize};

use crate::sm::sessions::SessionId;

/// A state-changing semaphore operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SemaphoreCommand {
    /// Takes `permits` of semaphore `name`, whose limit is `limit` (fixed by the
    /// first acquirer); queues if they are not free and `wait`.
    Acquire {
        name: String,
        session_id: SessionId,
        permits: u32,
        limit: u32,
        wait: bool,
    },
    Release {
        name: String,
        session_id: SessionId,
        fencing_token: u64,
    },
    /// Withdraws a waiter whose wait ended (or whose client left).
    Withdraw { name: String, waiter_id: u64 },
}

impl SemaphoreCommand {
    /// A cheap estimate of the variable part of its encoded size, in bytes.
    pub fn size_hint(&self) -> usize {
        match self {
            Self::Acquire { name, .. }
            | Self::Release { name, .. }
            | Self::Withdraw { name, .. } => name.len(),
        }
    }
}

/// What applying a semaphore command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SemaphoreOutcome {
    Granted {
        fencing_token: u64,
    },
    Queued {
        waiter_id: u64,
    },
    /// Not enough free permits and the request did not wait (or was withdrawn).
    Unavailable,
    /// The semaphore exists with another limit.
    LimitMismatch {
        limit: u32,
    },
    Released,
}
