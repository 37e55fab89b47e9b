//! The elections room: its state (an [`Election`] per name: at most one leader and
//! the candidates queued behind it), its command ([`ElectionCommand`]), its rules
//! (`rules`: campaign, resign, withdraw) and its session-end hook.
//!
//! Candidates queue by priority (higher first), then FIFO; the leader's `term` is
//! its fencing token, from the cluster-wide allocator (`sm::next_token`).
//! Leadership passes on resign or when the leader's session ends.
//!
//! Like all of `sm`, it must not depend on storage, Raft, the clock or the HTTP
//! layer; of the other rooms it touches only `sessions` (a leader's or candidate's
//! session).

mod command;
mod rules;

#[cfg(test)]
mod tests;

pub use command::{ElectionCommand, ElectionOutcome};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sm::sessions::SessionId;
use crate::sm::wait_queue;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub waiter_id: u64,
    pub session_id: SessionId,
    pub value_json: String,
    pub priority: i32,
    pub since_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    pub session_id: SessionId,
    pub value_json: String,
    pub term: u64,
    pub since_ms: u64,
    pub waiter_id: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Election {
    pub leader: Option<Leadership>,
    /// Higher priority first, then FIFO.
    pub candidates: Vec<Candidate>,
    pub last_term: u64,
}

impl Election {
    pub fn enqueue(&mut self, candidate: Candidate) {
        let position = self
            .candidates
            .iter()
            .position(|c| c.priority < candidate.priority)
            .unwrap_or(self.candidates.len());
        self.candidates.insert(position, candidate);
    }

    /// Makes the first candidate leader if there is no leader; the term comes from
    /// the cluster-wide token allocator `tokens`.
    pub fn promote(&mut self, index: u64, now_ms: u64, tokens: &mut u64) {
        if self.leader.is_some() || self.candidates.is_empty() {
            return;
        }
        let next = self.candidates.remove(0);
        let term = wait_queue::stamp(&mut self.last_term, tokens, index);
        self.leader = Some(Leadership {
            session_id: next.session_id,
            value_json: next.value_json,
            term,
            since_ms: now_ms,
            waiter_id: next.waiter_id,
        });
    }
}

pub type Elections = BTreeMap<String, Election>;

crate::sm::wait_queue::impl_granted!(Leadership, term);
crate::sm::wait_queue::impl_waiting!(Candidate);

impl crate::sm::wait_queue::Idle for Election {
    fn is_idle(&self) -> bool {
        self.leader.is_none() && self.candidates.is_empty()
    }
}
