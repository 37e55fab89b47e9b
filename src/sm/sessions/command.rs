//! The session command: what a session operation carries in the log. (Keepalives
//! batched by the leader travel in `Command::Tick` instead.)

use serde::{Deserialize, Serialize};

use super::{NewSession, SessionId};

/// A state-changing session operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionCommand {
    Create(NewSession),
    Keepalive { session_id: SessionId },
    End { session_id: SessionId },
}

impl SessionCommand {
    /// A cheap estimate of the variable part of its encoded size, in bytes.
    pub fn size_hint(&self) -> usize {
        match self {
            Self::Create(new) => {
                new.name.len()
                    + new.metadata_json.len()
                    + new.capabilities.iter().map(String::len).sum::<usize>()
            }
            Self::Keepalive { .. } | Self::End { .. } => 0,
        }
    }

    /// Whether applying it can free capacity (then queued tasks are assigned).
    pub fn may_free_capacity_or_ready_work(&self) -> bool {
        !matches!(self, Self::Keepalive { .. })
    }
}

/// What applying a session command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOutcome {
    Created {
        session_id: SessionId,
        expires_at_ms: u64,
    },
    Renewed {
        expires_at_ms: u64,
    },
    Ended,
    /// A tick renewed this many sessions from batched keepalives.
    Ticked {
        renewed: u32,
    },
}
