//! The deterministic state machine: a pure function of (state, batch, log index).
//!
//! Owns the coordination state and the rules that change it. It does no IO, reads no
//! clock or RNG and iterates no `HashMap`: time arrives inside each [`Batch`], stamped
//! by the leader, and cluster time never goes backwards. Applying the same batches to
//! the same state yields the same bytes on every replica (tested below), which is what
//! lets Raft replicate it. Refusals (a failed compare-and-set) are [`Outcome`]s, not
//! errors. Storage and Raft live in `store`; this module must not depend on them.

pub mod command;
pub mod kv;
pub mod requests;

use serde::{Deserialize, Serialize};

pub use command::{Applied, Batch, BatchResponse, Command, Outcome, Proposal};
use kv::KvMap;
use requests::RequestTable;

/// All replicated coordination state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Cluster time: the largest leader timestamp applied so far, ms since the epoch.
    pub cluster_time_ms: u64,
    /// The command index of the last applied command (0 before any).
    pub last_command_index: u64,
    pub kv: KvMap,
    pub requests: RequestTable,
}

impl State {
    /// Applies one log entry's batch and returns one [`Applied`] per proposal.
    pub fn apply_batch(&mut self, batch: &Batch) -> BatchResponse {
        self.cluster_time_ms = self.cluster_time_ms.max(batch.leader_time_ms);
        self.requests.expire(self.cluster_time_ms);
        let results = batch
            .proposals
            .iter()
            .map(|proposal| self.apply_proposal(proposal))
            .collect();
        BatchResponse { results }
    }

    fn apply_proposal(&mut self, proposal: &Proposal) -> Applied {
        let fingerprint = proposal
            .request_id
            .as_ref()
            .map(|_| requests::fingerprint(&proposal.command));
        if let Some(record) = proposal
            .request_id
            .as_deref()
            .and_then(|id| self.requests.get(id))
        {
            if Some(record.fingerprint) != fingerprint {
                return Applied {
                    index: record.applied.index,
                    outcome: Outcome::RequestIdConflict,
                };
            }
            return record.applied.clone();
        }
        self.last_command_index += 1;
        let index = self.last_command_index;
        let applied = Applied {
            index,
            outcome: self.apply_command(&proposal.command, index),
        };
        if let (Some(request_id), Some(fingerprint)) = (&proposal.request_id, fingerprint) {
            self.requests.insert(
                request_id.clone(),
                applied.clone(),
                fingerprint,
                self.cluster_time_ms,
            );
        }
        applied
    }

    fn apply_command(&mut self, command: &Command, index: u64) -> Outcome {
        match command {
            Command::KvPut {
                key,
                value_json,
                if_version,
            } => kv::put(&mut self.kv, key, value_json, *if_version, index),
            Command::KvDelete { key, if_version } => kv::delete(&mut self.kv, key, *if_version),
        }
    }
}

#[cfg(test)]
mod tests;
