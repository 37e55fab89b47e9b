//! Locks: exclusive and shared holds with fencing tokens, FIFO waiters with writer
//! preference, and the wait-for graph used to refuse deadlocks.
//!
//! Grant rule: an exclusive request is granted when nobody holds the lock and no
//! one waits ahead of it; a shared request when no exclusive hold exists and no
//! waiter is ahead of it (so a waiting writer blocks later readers: no writer
//! starvation; FIFO keeps readers from starving too). Every grant's token is the
//! command index of the command that granted it, strictly increasing per lock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::sessions::SessionId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LockMode {
    Exclusive,
    Shared,
}

impl LockMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Exclusive => "exclusive",
            Self::Shared => "shared",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub session_id: SessionId,
    pub mode: LockMode,
    pub fencing_token: u64,
    pub acquired_at_ms: u64,
    /// The waiter id this hold was granted to, if it waited (0 if granted at once).
    pub waiter_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// The command index of the acquire that queued it.
    pub waiter_id: u64,
    pub session_id: SessionId,
    pub mode: LockMode,
    pub since_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub holders: Vec<Hold>,
    pub waiters: VecDeque<Waiter>,
    /// The last token granted (tokens only grow).
    pub last_token: u64,
    /// After a holder's session *expires*, the lock stays unavailable this long
    /// (set by the acquire that created the lock; 0 = none).
    pub lock_delay_ms: u64,
    /// Cluster time until which the lock is held back, and the expired holder's
    /// token, which may still re-acquire it meanwhile.
    pub delayed_until_ms: u64,
    pub delayed_token: u64,
}

impl Lock {
    pub fn is_idle(&self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty() && self.delayed_until_ms == 0
    }

    fn delayed(&self) -> bool {
        self.delayed_until_ms != 0
    }

    fn grantable(&self, mode: LockMode) -> bool {
        match mode {
            LockMode::Exclusive => self.holders.is_empty(),
            LockMode::Shared => self
                .holders
                .iter()
                .all(|hold| hold.mode == LockMode::Shared),
        }
    }

    /// Whether a new request could be granted now (nobody waits ahead of it).
    pub fn grantable_now(&self, mode: LockMode) -> bool {
        !self.delayed() && self.waiters.is_empty() && self.grantable(mode)
    }

    pub fn hold_of(&self, session: SessionId) -> Option<&Hold> {
        self.holders.iter().find(|hold| hold.session_id == session)
    }

    /// Grants a hold. Tokens come from the cluster-wide allocator `tokens`, so they
    /// strictly increase and are never reused, even after this lock is forgotten.
    pub fn grant(
        &mut self,
        session_id: SessionId,
        mode: LockMode,
        waiter_id: u64,
        index: u64,
        now_ms: u64,
        tokens: &mut u64,
    ) -> u64 {
        let fencing_token = super::next_token(tokens, index);
        self.last_token = fencing_token;
        self.holders.push(Hold {
            session_id,
            mode,
            fencing_token,
            acquired_at_ms: now_ms,
            waiter_id,
        });
        fencing_token
    }

    /// Grants waiters from the head of the queue while the rule allows.
    pub fn grant_waiters(&mut self, index: u64, now_ms: u64, tokens: &mut u64) {
        while let Some(head) = self.waiters.front() {
            if self.delayed() || !self.grantable(head.mode) {
                return;
            }
            let waiter = self.waiters.pop_front().expect("head exists");
            self.grant(
                waiter.session_id,
                waiter.mode,
                waiter.waiter_id,
                index,
                now_ms,
                tokens,
            );
        }
    }

    /// Whether a hold in `mode` is compatible with the current holders.
    pub fn compatible(&self, mode: LockMode) -> bool {
        self.grantable(mode)
    }

    /// Sessions `session` would wait for if queued now: every holder and every
    /// waiter ahead of it (it cannot be granted before them).
    pub fn blockers(&self, session: SessionId) -> BTreeSet<SessionId> {
        self.holders
            .iter()
            .map(|hold| hold.session_id)
            .chain(self.waiters.iter().map(|waiter| waiter.session_id))
            .filter(|other| *other != session)
            .collect()
    }
}

pub type Locks = BTreeMap<String, Lock>;

/// The wait-for graph of all waiting sessions: session → sessions it waits for.
pub fn wait_for_graph(locks: &Locks) -> BTreeMap<SessionId, BTreeSet<SessionId>> {
    let mut graph: BTreeMap<SessionId, BTreeSet<SessionId>> = BTreeMap::new();
    for lock in locks.values() {
        for (position, waiter) in lock.waiters.iter().enumerate() {
            let edges = graph.entry(waiter.session_id).or_default();
            edges.extend(lock.holders.iter().map(|hold| hold.session_id));
            edges.extend(
                lock.waiters
                    .iter()
                    .take(position)
                    .map(|ahead| ahead.session_id),
            );
            edges.remove(&waiter.session_id);
        }
    }
    graph
}

/// If `session` starting to wait for `blockers` closes a cycle, the cycle (starting
/// and ending at `session`).
pub fn find_cycle(
    graph: &BTreeMap<SessionId, BTreeSet<SessionId>>,
    session: SessionId,
    blockers: &BTreeSet<SessionId>,
) -> Option<Vec<SessionId>> {
    // Depth-first search from each blocker for a path back to `session`.
    let mut visited = BTreeSet::new();
    for &start in blockers {
        let mut stack = vec![(start, vec![session, start])];
        while let Some((node, path)) = stack.pop() {
            if node == session {
                return Some(path);
            }
            if !visited.insert(node) {
                continue;
            }
            for &next in graph.get(&node).into_iter().flatten() {
                let mut longer = path.clone();
                longer.push(next);
                stack.push((next, longer));
            }
        }
    }
    None
}
