//! The key/value command: what a KV write carries in the log.

use serde::{Deserialize, Serialize};

use crate::sm::sessions::SessionId;

/// A state-changing key/value operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Writes `value_json` (the JSON text as the client sent it) at `key`.
    /// `if_version`: `Some(0)` means the key must not exist, `Some(v)` that its
    /// version must be `v`. With `session_id` the key is ephemeral: deleted when
    /// that session ends.
    Put {
        key: String,
        value_json: String,
        if_version: Option<u64>,
        session_id: Option<SessionId>,
    },
    /// Deletes `key`, optionally only at version `if_version`.
    Delete {
        key: String,
        if_version: Option<u64>,
    },
}

impl KvCommand {
    /// A cheap estimate of the variable part of its encoded size, in bytes.
    pub fn size_hint(&self) -> usize {
        match self {
            Self::Put {
                key, value_json, ..
            } => key.len() + value_json.len(),
            Self::Delete { key, .. } => key.len(),
        }
    }
}

/// What applying a KV command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOutcome {
    /// The key now holds the value at `version` (the command index).
    Written { version: u64 },
    /// The key was deleted (`existed: false` when there was nothing to delete).
    Deleted { existed: bool },
    /// A compare-and-set precondition failed; `current_version` is 0 when absent.
    CasMismatch { current_version: u64 },
}
