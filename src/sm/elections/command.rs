//! The election command: what a campaign, a resignation or a withdrawn candidacy
//! carries in the log. It depends only on session ids.

use serde::{Deserialize, Serialize};

use crate::sm::sessions::SessionId;

/// A state-changing election operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionCommand {
    /// Campaigns for `name` with `value_json`; queues by `priority` (then FIFO) if
    /// someone leads and `wait`.
    Campaign {
        name: String,
        session_id: SessionId,
        value_json: String,
        priority: i32,
        wait: bool,
    },
    Resign {
        name: String,
        session_id: SessionId,
        term: u64,
    },
    /// Withdraws a candidacy whose wait ended (or whose client left).
    Withdraw { name: String, waiter_id: u64 },
}

impl ElectionCommand {
    /// A cheap estimate of the variable part of its encoded size, in bytes.
    pub fn size_hint(&self) -> usize {
        match self {
            Self::Campaign {
                name, value_json, ..
            } => name.len() + value_json.len(),
            Self::Resign { name, .. } | Self::Withdraw { name, .. } => name.len(),
        }
    }
}

/// What applying an election command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionOutcome {
    /// This session leads `name` with term (fencing token) `term`.
    Elected {
        term: u64,
    },
    Queued {
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
