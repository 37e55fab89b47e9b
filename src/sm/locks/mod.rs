//! The locks room: its state (the lock table [`Locks`], which keeps the wait-for
//! graph of `wait_for` in step with every change to holders and waiters), its
//! command ([`LockCommand`]), its rules (`rules`: acquire, release, withdraw,
//! lock-delay) and its session-end hook. Exclusive and shared holds carry fencing
//! tokens; waiters are FIFO with writer preference.
//!
//! Grant rule: an exclusive request is granted when nobody holds the lock and no
//! one waits ahead of it; a shared request when no exclusive hold exists and no
//! waiter is ahead of it (so a waiting writer blocks later readers: no writer
//! starvation; FIFO keeps readers from starving too). Every grant's token is the
//! command index of the command that granted it, strictly increasing per lock.
//!
//! Like all of `sm`, it must not depend on storage, Raft, the clock or the HTTP
//! layer; of the other rooms it touches only `sessions` (a holder's or waiter's
//! session) and the shared fencing-token allocator (`sm::next_token`).

mod command;
mod rules;
pub mod wait_for;

#[cfg(test)]
mod deadlock_tests;
#[cfg(test)]
mod delay_tests;
#[cfg(test)]
mod grant_tests;
#[cfg(test)]
mod graph_tests;
#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod property_tests;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod scale_tests;

pub use command::{LockCommand, LockOutcome};

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::sm::events::{EventBody, Events};
use crate::sm::sessions::SessionId;
use wait_for::{waiter_edge, Node, WaitFor};

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

crate::sm::wait_queue::impl_granted!(Hold, fencing_token);
crate::sm::wait_queue::impl_waiting!(Waiter);

/// How the locks room words a grant and a queued waiter.
pub(in crate::sm) const ANSWERS: crate::sm::wait_queue::Answers = crate::sm::wait_queue::Answers {
    granted: |fencing_token| crate::sm::Outcome::Lock(LockOutcome::Granted { fencing_token }),
    queued: |waiter_id| crate::sm::Outcome::Lock(LockOutcome::Queued { waiter_id }),
};

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
    fn grant(
        &mut self,
        session_id: SessionId,
        mode: LockMode,
        waiter_id: u64,
        index: u64,
        now_ms: u64,
        tokens: &mut u64,
    ) -> u64 {
        let fencing_token = crate::sm::wait_queue::stamp(&mut self.last_token, tokens, index);
        self.holders.push(Hold {
            session_id,
            mode,
            fencing_token,
            acquired_at_ms: now_ms,
            waiter_id,
        });
        fencing_token
    }

    /// Whether a hold in `mode` is compatible with the current holders.
    pub fn compatible(&self, mode: LockMode) -> bool {
        self.grantable(mode)
    }
}

/// The lock table, by name, with its derived wait-for graph. Every change to
/// holders or waiters goes through these methods, which keep the graph in step.
/// Serialized as the bare map; decoding rebuilds the graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locks {
    by_name: BTreeMap<String, Lock>,
    /// Derived from `by_name`.
    graph: WaitFor,
}

impl Serialize for Locks {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.by_name.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Locks {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let by_name = BTreeMap::<String, Lock>::deserialize(deserializer)?;
        let graph = WaitFor::rebuild(&by_name);
        Ok(Self { by_name, graph })
    }
}

impl std::ops::Index<&str> for Locks {
    type Output = Lock;

    fn index(&self, name: &str) -> &Lock {
        &self.by_name[name]
    }
}

impl<'a> IntoIterator for &'a Locks {
    type Item = (&'a String, &'a Lock);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Lock>;

    fn into_iter(self) -> Self::IntoIter {
        self.by_name.iter()
    }
}

impl Locks {
    pub fn get(&self, name: &str) -> Option<&Lock> {
        self.by_name.get(name)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, String, Lock> {
        self.by_name.iter()
    }

    /// The names from `start` (inclusive) on, in byte order.
    pub fn names_from<'a>(&'a self, start: &str) -> impl Iterator<Item = &'a str> + 'a {
        let bounds = (std::ops::Bound::Included(start), std::ops::Bound::Unbounded);
        self.by_name
            .range::<str, _>(bounds)
            .map(|(name, _)| name.as_str())
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The derived wait-for graph.
    pub fn graph(&self) -> &WaitFor {
        &self.graph
    }

    /// The lock named `name`, created with `lock_delay_ms` if it does not exist.
    pub fn get_or_create(&mut self, name: &str, lock_delay_ms: u64) -> &Lock {
        self.by_name.entry(name.to_owned()).or_insert_with(|| Lock {
            lock_delay_ms,
            ..Lock::default()
        })
    }

    /// Forgets `name` if nobody holds or awaits it and it is not held back.
    pub fn drop_if_idle(&mut self, name: &str) {
        if self.by_name.get(name).is_some_and(Lock::is_idle) {
            self.by_name.remove(name);
        }
    }

    /// Grants `session_id` a hold of the existing lock `name`; returns its token.
    pub fn grant(
        &mut self,
        name: &str,
        session_id: SessionId,
        mode: LockMode,
        waiter_id: u64,
        clock: (u64, u64),
        tokens: &mut u64,
    ) -> u64 {
        let (index, now_ms) = clock;
        let lock = self.by_name.get_mut(name).expect("the lock exists");
        let token = lock.grant(session_id, mode, waiter_id, index, now_ms, tokens);
        self.graph.add_hold(name, session_id);
        token
    }

    /// Removes the hold at `position` of `name`.
    pub fn remove_hold(&mut self, name: &str, position: usize) {
        let lock = self.by_name.get_mut(name).expect("the lock exists");
        let hold = lock.holders.remove(position);
        self.graph.remove_hold(name, hold.session_id);
    }

    /// Queues `waiter` at the tail of the existing lock `name`.
    pub fn push_waiter(&mut self, name: &str, waiter: Waiter) {
        let lock = self.by_name.get_mut(name).expect("the lock exists");
        self.graph.touch(waiter.session_id, name, true);
        lock.waiters.push_back(waiter);
        let tail = lock.waiters.len() - 1;
        self.graph.add_edge(waiter_edge(name, lock, tail));
    }

    /// Removes the waiter at `position` of `name` and returns it; the waiter behind
    /// it now points to the one ahead (or to the lock, if it becomes the head).
    pub fn remove_waiter_at(&mut self, name: &str, position: usize) -> Option<Waiter> {
        let lock = self.by_name.get_mut(name)?;
        if position >= lock.waiters.len() {
            return None;
        }
        self.graph.remove_edge(waiter_edge(name, lock, position));
        self.graph
            .remove_edge(waiter_edge(name, lock, position + 1));
        let waiter = lock.waiters.remove(position).expect("in range");
        self.graph.add_edge(waiter_edge(name, lock, position));
        self.graph.touch(waiter.session_id, name, false);
        Some(waiter)
    }

    /// Removes every waiter of `name` that `remove` picks.
    pub fn remove_waiters(&mut self, name: &str, remove: impl Fn(&Waiter) -> bool) {
        let Some(lock) = self.by_name.get(name) else {
            return;
        };
        let positions: Vec<usize> = (0..lock.waiters.len())
            .filter(|&position| remove(&lock.waiters[position]))
            .collect();
        // From the back, so the positions still ahead stay valid.
        for position in positions.into_iter().rev() {
            self.remove_waiter_at(name, position);
        }
    }

    /// Grants waiters of `name` from the head of its queue while the rule allows.
    pub fn grant_waiters(
        &mut self,
        name: &str,
        clock: (u64, u64),
        tokens: &mut u64,
        events: &mut Events,
    ) {
        while let Some(lock) = self.by_name.get(name) {
            let grantable = lock
                .waiters
                .front()
                .is_some_and(|head| !lock.delayed() && lock.grantable(head.mode));
            if !grantable {
                return;
            }
            let waiter = self.remove_waiter_at(name, 0).expect("head exists");
            let fencing_token = self.grant(
                name,
                waiter.session_id,
                waiter.mode,
                waiter.waiter_id,
                clock,
                tokens,
            );
            events.push(
                clock.0,
                EventBody::LockGranted {
                    name: name.to_owned(),
                    session_id: waiter.session_id,
                    fencing_token,
                    mode: waiter.mode.name(),
                },
            );
        }
    }

    /// Holds `name` back until `until_ms` (0 ends the delay); `token` is the expired
    /// holder's, which may take it back meanwhile.
    pub fn set_delay(&mut self, name: &str, until_ms: u64, token: u64) {
        if let Some(lock) = self.by_name.get_mut(name) {
            lock.delayed_until_ms = until_ms;
            if until_ms != 0 {
                lock.delayed_token = token;
            }
        }
    }

    /// The locks `session` holds or awaits.
    pub fn locks_of(&self, session: SessionId) -> Vec<String> {
        self.graph.locks_of(session)
    }

    /// If `session` queuing on `name` now would close a cycle, the cycle of
    /// sessions, starting and ending at `session`. The new waiter would wait for
    /// the last waiter of another session (who reaches every waiter ahead and the
    /// holders), else for the lock itself (its holders).
    pub fn find_cycle(&self, name: &str, session: SessionId) -> Option<Vec<SessionId>> {
        let lock = self.by_name.get(name)?;
        let start = lock
            .waiters
            .iter()
            .rev()
            .find(|waiter| waiter.session_id != session)
            .map_or(Node::Lock(name.to_owned()), |waiter| {
                Node::Session(waiter.session_id)
            });
        let path = self.graph.find_path(session, start)?;
        Some(self.shortest_sessions(name, session, path))
    }

    /// The sessions of `path` (from the new waiter's start to `session`), with each
    /// walk down a lock's queue cut short: any waiter of a lock waits for its
    /// holders directly, so from the first session on the path that waits on the
    /// lock the cycle goes straight to the holder. `[2, 1, 2]`, not every innocent
    /// waiter queued between them.
    fn shortest_sessions(&self, name: &str, session: SessionId, path: Vec<Node>) -> Vec<SessionId> {
        let mut cycle = vec![session];
        // Where the sessions since the last lock node begin in `cycle`.
        let mut run_start = 0;
        for node in path {
            match node {
                Node::Session(id) => {
                    if cycle.last() != Some(&id) {
                        cycle.push(id);
                    }
                }
                Node::Lock(lock) => {
                    let waits_on = |position: usize| {
                        let id = cycle[position];
                        if position == 0 {
                            return lock == name; // the new waiter itself
                        }
                        let holds = self.by_name[&lock].hold_of(id).is_some();
                        self.graph.waits_on(id, &lock, holds)
                    };
                    if let Some(first) = (run_start..cycle.len()).find(|&p| waits_on(p)) {
                        cycle.truncate(first + 1);
                    }
                    run_start = cycle.len();
                }
            }
        }
        cycle
    }
}
