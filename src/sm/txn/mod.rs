//! The transactions room (`POST /v1/txn`): one command that checks comparisons
//! against the state and then applies one of two branches of ordinary commands
//! (KV put/delete, task submit/cancel, non-waiting lock and semaphore
//! acquire/release) all or nothing, in one log entry.
//!
//! All or nothing without copying the state: no two ops of a branch may touch the
//! same resource (a key, a lock, a semaphore, a task — a submit touches the tasks it
//! depends on), as in etcd, so no op changes what another one reads; each op is
//! then checked against the state before any is applied (`rules::op_refusal`, which
//! asks what the room's own rule would refuse, counting what the branch adds
//! against the replicated caps), and only if none is refused are they applied, in
//! order, by the rooms' own rules. A unit test checks on random states that the
//! check and the rule agree.
//!
//! Like all of `sm`, it must not depend on storage, Raft, the clock or the HTTP
//! layer; it reads the other rooms' state and applies their commands through
//! `State`.

mod rules;

pub use rules::{is_refusal, shape};

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use super::tasks::{TaskId, TaskState};
use super::{Command, Outcome};

/// One comparison; a transaction takes its success branch when all hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    /// The key's version is this (0: the key does not exist).
    KeyVersion { key: String, version: u64 },
    /// The key exists (or not).
    KeyExists { key: String, exists: bool },
    /// The key's value equals this JSON value (compared as parsed JSON).
    KeyValue { key: String, value_json: String },
    /// The lock is held with this fencing token.
    LockToken { lock: String, fencing_token: u64 },
    /// The election's current term is this one (and it has a leader).
    ElectionTerm { election: String, term: u64 },
    /// The task exists in this state.
    TaskState { task_id: TaskId, state: TaskState },
}

/// A transaction: `success` runs when every comparison holds, else `failure`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCommand {
    pub compare: Vec<Compare>,
    pub success: Vec<Command>,
    pub failure: Vec<Command>,
}

impl TxnCommand {
    /// A cheap estimate of the variable part of its encoded size, in bytes.
    pub fn size_hint(&self) -> usize {
        let compares: usize = self
            .compare
            .iter()
            .map(|c| match c {
                Compare::KeyVersion { key, .. } | Compare::KeyExists { key, .. } => key.len(),
                Compare::KeyValue { key, value_json } => key.len() + value_json.len(),
                Compare::LockToken { lock, .. } => lock.len(),
                Compare::ElectionTerm { election, .. } => election.len(),
                Compare::TaskState { .. } => 8,
            })
            .sum();
        let ops: usize = self
            .success
            .iter()
            .chain(&self.failure)
            .map(Command::size_hint)
            .sum();
        compares + ops
    }
}

/// What applying a transaction did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOutcome {
    /// The branch taken (`succeeded`: the success branch) was applied: one outcome
    /// per op, in order.
    Applied {
        succeeded: bool,
        results: Vec<Outcome>,
    },
    /// Op `op_index` of the branch taken would be refused (its refusal attached):
    /// nothing of the transaction was applied.
    OpRefused {
        succeeded: bool,
        op_index: usize,
        refusal: Box<Outcome>,
    },
}
