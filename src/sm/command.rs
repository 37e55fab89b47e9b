//! The replicated vocabulary: what a log entry carries and what applying it returns.
//!
//! A Raft log entry is a [`Batch`]: the leader's clock reading plus the commands the
//! proposer coalesced. Each command gets its own *command index*, its position in the
//! replicated command sequence; that is the `index` / `version` / fencing token the
//! API speaks of. These types are encoded with bincode (see `codec`), so they avoid
//! serde attributes bincode cannot round-trip.

use serde::{Deserialize, Serialize};

/// One Raft log entry's payload: commands stamped with the proposing leader's time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The proposing leader's wall clock, ms since the Unix epoch. The state machine
    /// never lets cluster time go backwards, whatever this says.
    pub leader_time_ms: u64,
    pub proposals: Vec<Proposal>,
}

/// A command with its optional client-chosen idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub request_id: Option<String>,
    pub command: Command,
}

/// Every state-changing operation the state machine knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Writes `value_json` (the JSON text as the client sent it) at `key`. `if_version`: `Some(0)` means
    /// the key must not exist, `Some(v)` that its version must be `v`.
    KvPut {
        key: String,
        value_json: String,
        if_version: Option<u64>,
    },
    /// Deletes `key`, optionally only at version `if_version`.
    KvDelete {
        key: String,
        if_version: Option<u64>,
    },
}

/// What applying one command did. Refusals are outcomes, not errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The key now holds the value at `version` (the command index).
    KvWritten { version: u64 },
    /// The key was deleted (`existed: false` when there was nothing to delete).
    KvDeleted { existed: bool },
    /// A compare-and-set precondition failed; `current_version` is 0 when absent.
    CasMismatch { current_version: u64 },
    /// The `request_id` was already used for a *different* command (applied at
    /// `Applied::index`); nothing was applied. Never recorded.
    RequestIdConflict,
}

/// One command's result: its command index and outcome. A retried `request_id`
/// returns the first `Applied` unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
    pub outcome: Outcome,
}

/// The results of one log entry, one per proposal and in the same order. Blank and
/// membership entries produce an empty response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub results: Vec<Applied>,
}
