//! The leader's ticker: replicated time and batched keepalives.
//!
//! Expiry is a replicated decision: only the leader's ticker moves cluster time
//! forward when nothing else does, by proposing a `Tick` **only when something is
//! due** (a session expiry, a task lease, a retry backoff, a `not_before`) according
//! to the applied state. Followers never expire anything on their own clock.
//!
//! Keepalives are cheap: `POST /v1/sessions/{id}/keepalive` on the leader only
//! records `(session, now)` in memory ([`Keepalives::record`]); the ticker replicates
//! everything recorded as one `Tick { renewals }` every `keepalive_flush_ms`, so
//! 10,000 sessions beating every second cost a handful of log entries per second.
//! Each renewal counts from the moment the leader accepted it. If the leader dies
//! before flushing, the renewals since its last flush are lost: the log's expiry
//! (from the last replicated renewal) stands, never a reset to a full TTL. That
//! can be earlier than the client was told by up to its keepalive interval plus
//! one flush interval.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;

use super::proposer::Proposer;
use crate::raft_types::{NodeId, Raft};
use crate::sm::sessions::SessionId;
use crate::sm::{Command, Submission};
use crate::store::StateMachineStore;

/// The longest the ticker sleeps without re-reading the state.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// The shortest gap between two ticks (guards against a tick storm).
const MIN_TICK_GAP: Duration = Duration::from_millis(5);

/// Keepalives accepted by this leader and not yet replicated.
#[derive(Clone, Default)]
pub struct Keepalives {
    pending: Arc<Mutex<BTreeMap<SessionId, u64>>>,
    /// Wakes the ticker when the first keepalive after a flush arrives.
    arrived: Arc<tokio::sync::Notify>,
}

impl Keepalives {
    /// Records a keepalive for `session` accepted at `at_ms`.
    pub fn record(&self, session: SessionId, at_ms: u64) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = pending.is_empty();
        let entry = pending.entry(session).or_insert(at_ms);
        *entry = (*entry).max(at_ms);
        if first {
            self.arrived.notify_one();
        }
    }

    fn take(&self) -> Vec<(SessionId, u64)> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::take(&mut *pending).into_iter().collect()
    }

    fn is_empty(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_empty()
    }
}

/// The ticker task's parts; [`Ticker::spawn`] starts it.
pub struct Ticker {
    pub node_id: NodeId,
    pub raft: Raft,
    pub proposer: Proposer,
    pub state_machine: StateMachineStore,
    pub keepalives: Keepalives,
    pub flush_interval: Duration,
}

impl Ticker {
    /// Starts the ticker task.
    pub fn spawn(self) {
        tokio::spawn(self.run());
    }

    async fn run(self) {
        let mut metrics = self.raft.metrics();
        let mut applied = self.state_machine.subscribe_applied();
        let mut last_flush = tokio::time::Instant::now();
        loop {
            let leading = {
                let m = metrics.borrow();
                m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
            };
            if !leading {
                // Keepalives recorded under a lost leadership are not ours to replicate.
                self.keepalives.take();
                if metrics.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let now = self.proposer.leader_now_ms();
            let due = self.state_machine.read().state.next_due_ms();
            let flush_due =
                !self.keepalives.is_empty() && last_flush.elapsed() >= self.flush_interval;
            if flush_due || due.is_some_and(|at| at <= now) {
                last_flush = tokio::time::Instant::now();
                self.tick().await;
                tokio::time::sleep(MIN_TICK_GAP).await;
                continue;
            }
            let until_due = due.map_or(MAX_IDLE, |at| Duration::from_millis(at - now));
            let until_flush = if self.keepalives.is_empty() {
                MAX_IDLE
            } else {
                self.flush_interval.saturating_sub(last_flush.elapsed())
            };
            let sleep = until_due.min(until_flush).min(MAX_IDLE);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                // New state can bring an earlier deadline; new keepalives start the flush clock.
                _ = applied.changed() => {}
                _ = metrics.changed() => {}
                _ = self.keepalives.arrived.notified() => {}
            }
        }
    }

    async fn tick(&self) {
        let renewals = self.keepalives.take();
        let submission = Submission {
            guard: None,
            request_id: None,
            command: Command::Tick { renewals },
        };
        if let Err(error) = self.proposer.propose(submission).await {
            tracing::debug!("tick not applied: {error}");
        }
    }
}
