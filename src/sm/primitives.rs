//! Semaphores, barriers and elections: records and their rules.
//!
//! - A **semaphore** has a `limit` fixed by its first acquirer; sessions take weighted
//!   permits FIFO (a request waits while anyone waits ahead of it); every grant has
//!   a fencing token (the granting command's index, increasing per semaphore).
//! - A **barrier** releases a generation when `parties` distinct sessions have
//!   arrived; a participant's session ending breaks the generation for everyone.
//! - An **election** has at most one leader; candidates queue by priority (higher
//!   first), then FIFO; the leader's `term` is its fencing token. Leadership passes on
//!   resign or when the leader's session ends.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::sessions::SessionId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permit {
    pub session_id: SessionId,
    pub permits: u32,
    pub fencing_token: u64,
    pub acquired_at_ms: u64,
    pub waiter_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermitWaiter {
    pub waiter_id: u64,
    pub session_id: SessionId,
    pub permits: u32,
    pub since_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Semaphore {
    pub limit: u32,
    pub holders: Vec<Permit>,
    pub waiters: VecDeque<PermitWaiter>,
    pub last_token: u64,
}

impl Semaphore {
    pub fn used(&self) -> u32 {
        self.holders.iter().map(|p| p.permits).sum()
    }

    pub fn is_idle(&self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty()
    }

    /// Grants permits; tokens come from the cluster-wide allocator `tokens`.
    pub fn grant(
        &mut self,
        session_id: SessionId,
        permits: u32,
        waiter_id: u64,
        index: u64,
        now_ms: u64,
        tokens: &mut u64,
    ) -> u64 {
        let fencing_token = super::next_token(tokens, index);
        self.last_token = fencing_token;
        self.holders.push(Permit {
            session_id,
            permits,
            fencing_token,
            acquired_at_ms: now_ms,
            waiter_id,
        });
        fencing_token
    }

    /// Grants waiters from the head of the queue while their permits fit.
    pub fn grant_waiters(&mut self, index: u64, now_ms: u64, tokens: &mut u64) {
        while let Some(head) = self.waiters.front() {
            if self.used() + head.permits > self.limit {
                return;
            }
            let waiter = self.waiters.pop_front().expect("head exists");
            self.grant(
                waiter.session_id,
                waiter.permits,
                waiter.waiter_id,
                index,
                now_ms,
                tokens,
            );
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Barrier {
    pub parties: u32,
    /// The generation now gathering.
    pub generation: u64,
    pub arrived: BTreeSet<SessionId>,
    /// How recent generations ended: generation → broken. Bounded.
    pub ended: BTreeMap<u64, bool>,
}

/// How many ended generations a barrier remembers (for waiters to read).
pub const BARRIER_HISTORY: usize = 64;

impl Barrier {
    /// Ends the gathering generation (released, or broken) and starts the next.
    pub fn end_generation(&mut self, broken: bool) {
        self.ended.insert(self.generation, broken);
        while self.ended.len() > BARRIER_HISTORY {
            self.ended.pop_first();
        }
        self.generation += 1;
        self.arrived.clear();
    }
}

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
    pub fn is_idle(&self) -> bool {
        self.leader.is_none() && self.candidates.is_empty()
    }

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
        let term = super::next_token(tokens, index);
        self.last_term = term;
        self.leader = Some(Leadership {
            session_id: next.session_id,
            value_json: next.value_json,
            term,
            since_ms: now_ms,
            waiter_id: next.waiter_id,
        });
    }
}

pub type Semaphores = BTreeMap<String, Semaphore>;
pub type Barriers = BTreeMap<String, Barrier>;
pub type Elections = BTreeMap<String, Election>;
