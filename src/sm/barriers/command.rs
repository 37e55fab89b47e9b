//! The barrier command: what an arrival or a leave carries in the log. It depends
//! only on session ids.

use serde::{Deserialize, Serialize};

use crate::sm::sessions::SessionId;

/// A state-changing barrier operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarrierCommand {
    /// Arrives at barrier `name` of `parties` sessions.
    Wait {
        name: String,
        session_id: SessionId,
        parties: u32,
    },
    /// Leaves a barrier generation that has not been released (the wait ended).
    Leave {
        name: String,
        session_id: SessionId,
        generation: u64,
    },
}

impl BarrierCommand {
    /// The barrier it concerns.
    pub fn name(&self) -> &str {
        match self {
            Self::Wait { name, .. } | Self::Leave { name, .. } => name,
        }
    }

    /// A cheap estimate of the variable part of its encoded size, in bytes.
    pub fn size_hint(&self) -> usize {
        match self {
            Self::Wait { name, .. } | Self::Leave { name, .. } => name.len(),
        }
    }
}

/// What applying a barrier command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarrierOutcome {
    Released {
        generation: u64,
    },
    Waiting {
        generation: u64,
    },
    /// The generation ended without release (a participant's session ended).
    Broken {
        generation: u64,
    },
    /// The session left a generation that was still waiting.
    Left,
}
