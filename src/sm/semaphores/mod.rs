//! The semaphores room: its state (a [`Semaphore`] per name: holders with weighted
//! permits and FIFO waiters), its command ([`SemaphoreCommand`]), its rules
//! (`rules`: acquire, release, withdraw) and its session-end hook.
//!
//! A semaphore has a `limit` fixed by its first acquirer; sessions take weighted
//! permits FIFO (a request waits while anyone waits ahead of it); every grant has a
//! fencing token from the cluster-wide allocator (`sm::next_token`).
//!
//! Like all of `sm`, it must not depend on storage, Raft, the clock or the HTTP
//! layer; of the other rooms it touches only `sessions` (a holder's or waiter's
//! session).

mod command;
mod rules;

#[cfg(test)]
mod property_tests;
#[cfg(test)]
mod tests;

pub use command::{SemaphoreCommand, SemaphoreOutcome};

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::sm::events::{EventBody, Events};
use crate::sm::sessions::SessionId;
use crate::sm::wait_queue;

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
        let fencing_token = wait_queue::stamp(&mut self.last_token, tokens, index);
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
    /// `name` is this semaphore's, for the `semaphore.granted` events.
    pub fn grant_waiters(
        &mut self,
        name: &str,
        clock: (u64, u64),
        tokens: &mut u64,
        events: &mut Events,
    ) {
        let (index, now_ms) = clock;
        while let Some(head) = self.waiters.front() {
            if self.used() + head.permits > self.limit {
                return;
            }
            let waiter = self.waiters.pop_front().expect("head exists");
            let fencing_token = self.grant(
                waiter.session_id,
                waiter.permits,
                waiter.waiter_id,
                index,
                now_ms,
                tokens,
            );
            events.push(
                index,
                EventBody::SemaphoreGranted {
                    name: name.to_owned(),
                    session_id: waiter.session_id,
                    fencing_token,
                    permits: waiter.permits,
                },
            );
        }
    }
}

pub type Semaphores = BTreeMap<String, Semaphore>;

crate::sm::wait_queue::impl_granted!(Permit, fencing_token);
crate::sm::wait_queue::impl_waiting!(PermitWaiter);

/// How the semaphores room words a grant and a queued waiter.
pub(in crate::sm) const ANSWERS: crate::sm::wait_queue::Answers = crate::sm::wait_queue::Answers {
    granted: |fencing_token| {
        crate::sm::Outcome::Semaphore(SemaphoreOutcome::Granted { fencing_token })
    },
    queued: |waiter_id| crate::sm::Outcome::Semaphore(SemaphoreOutcome::Queued { waiter_id }),
};

impl crate::sm::wait_queue::Idle for Semaphore {
    fn is_idle(&self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty()
    }
}
