//! The leader's ticker: replicated time and batched keepalives.
//!
//! Expiry is a replicated decision: only the leader's ticker moves cluster time
//! forward when nothing else does, by proposing a `Tick` **only when something is
//! due** (a session expiry, a task lease, a retry backoff, a `not_before`) according
//! to the applied state. Followers never expire anything on their own clock.
//!
//! Keepalives are cheap: `POST /v1/sessions/{id}/keepalive` on the leader records
//! `(session, now)` in memory ([`Keepalives::record`]); the ticker replicates
//! everything recorded as one `Tick { renewals }` every `keepalive_flush_ms`, so
//! 10,000 sessions beating every second cost a handful of log entries per second.
//! Each renewal counts from the moment the leader accepted it. A keepalive is
//! **answered only once the tick carrying it is committed and applied** (on disk on
//! a quorum): `record` hands back a [`Renewal`] the ticker resolves with the tick's
//! result, so a leader cut off from its quorum never tells an agent it is alive.
//! Renewals recorded under a leadership that is lost, or whose tick fails, are
//! answered with that failure (not applied, or outcome unknown).
//!
//! The ticker also upgrades the cluster's format: once every member (voters and
//! learners) has replied speaking this binary's format (`raft_types::Formats`),
//! it proposes `Command::Upgrade` (`sm::format`). Until then RPCs go out in the
//! previous format, which nodes of the previous release read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;

use super::proposer::{ProposeError, Proposer};
use crate::raft_types::{NodeId, Raft};
use crate::sm::sessions::SessionId;
use crate::sm::{Command, Submission};
use crate::store::StateMachineStore;

/// The longest the ticker sleeps without re-reading the state.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// The shortest gap between two ticks (guards against a tick storm).
const MIN_TICK_GAP: Duration = Duration::from_millis(5);

/// The answer to one recorded keepalive: the result of the tick that carried it.
/// Closed without an answer: the leadership it was recorded under was lost
/// before it was flushed (nothing was proposed).
pub type Renewal = tokio::sync::oneshot::Receiver<Result<(), ProposeError>>;

type Waiting = Vec<tokio::sync::oneshot::Sender<Result<(), ProposeError>>>;

/// Keepalives accepted by this leader and not yet replicated: per session the
/// latest acceptance time and the requests waiting for it to be durable.
#[derive(Clone, Default)]
pub struct Keepalives {
    pending: Arc<Mutex<BTreeMap<SessionId, (u64, Waiting)>>>,
    /// Wakes the ticker when the first keepalive after a flush arrives.
    arrived: Arc<tokio::sync::Notify>,
}

impl Keepalives {
    /// Records a keepalive for `session` accepted at `at_ms`; the renewal resolves
    /// once the tick carrying it is applied (or failed).
    pub fn record(&self, session: SessionId, at_ms: u64) -> Renewal {
        let (answer, renewal) = tokio::sync::oneshot::channel();
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = pending.is_empty();
        let entry = pending.entry(session).or_insert((at_ms, Vec::new()));
        entry.0 = entry.0.max(at_ms);
        entry.1.push(answer);
        if first {
            self.arrived.notify_one();
        }
        renewal
    }

    /// The recorded renewals and the requests waiting for them.
    fn take(&self) -> (Vec<(SessionId, u64)>, Waiting) {
        let taken = {
            let mut pending = self
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::take(&mut *pending)
        };
        let mut renewals = Vec::with_capacity(taken.len());
        let mut waiting = Vec::new();
        for (session, (at_ms, answers)) in taken {
            renewals.push((session, at_ms));
            waiting.extend(answers);
        }
        (renewals, waiting)
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
            let upgrade = self.upgrade_due(&metrics.borrow());
            if let Some(format) = upgrade {
                self.upgrade(format).await;
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

    /// The format to upgrade the cluster to, if every member speaks it now.
    fn upgrade_due(&self, metrics: &crate::raft_types::RaftMetrics) -> Option<u32> {
        let formats = self.state_machine.formats();
        let target = crate::codec::FORMAT_VERSION;
        if formats.active() >= target {
            return None;
        }
        let mut members = metrics.membership_config.membership().nodes();
        members
            .all(|(id, _)| *id == self.node_id || formats.speaks(*id) == Some(target))
            .then_some(target)
    }

    /// Proposes `Command::Upgrade { format }` and waits for it to apply.
    async fn upgrade(&self, format: u32) {
        let submission = Submission {
            guard: None,
            acting_as: None,
            request_id: None,
            command: Command::Upgrade { format },
        };
        match self.proposer.propose(submission).await {
            Ok(_) => tracing::info!(format, "the cluster now runs format {format}"),
            Err(error) => tracing::warn!(format, "upgrading the cluster's format: {error}"),
        }
    }

    /// Proposes one tick with every recorded renewal and answers the keepalives
    /// waiting for it with its result (durable: the proposer answers only after
    /// the entry is committed, so fsynced on a quorum, and applied).
    async fn tick(&self) {
        let (renewals, waiting) = self.keepalives.take();
        let submission = Submission {
            guard: None,
            acting_as: None,
            request_id: None,
            command: Command::Tick { renewals },
        };
        let result = self.proposer.propose(submission).await.map(|_| ());
        if let Err(error) = &result {
            tracing::debug!("tick not applied: {error}");
        }
        for answer in waiting {
            let _ = answer.send(result.clone());
        }
    }
}
