//! Time on apply: what falls due when cluster time advances (session expiry,
//! lock-delays ending, task timers, terminal-task removal), across rooms.
//!
//! Cluster time only moves through the log (the leader stamps each batch); this
//! module never reads a clock. Must not depend on storage, Raft or IO.

use super::tasks::{TaskLimits, TaskState};
use std::collections::BTreeSet;

use super::State;

/// A room's timers: (cluster time due, id), earliest first.
pub type Timers = BTreeSet<(u64, u64)>;

/// The id of the earliest timer due at or before `now_ms`.
pub fn first_due(timers: &Timers, now_ms: u64) -> Option<u64> {
    let &(at, id) = timers.first()?;
    (at <= now_ms).then_some(id)
}

/// When the earliest timer is due.
pub fn first_at(timers: &Timers) -> Option<u64> {
    timers.first().map(|&(at, _)| at)
}

impl State {
    /// Expires sessions, fires task timers that are due at cluster time and removes
    /// terminal tasks whose retention has passed.
    pub(in crate::sm) fn advance_time(&mut self) {
        let now = self.cluster_time_ms;
        while let Some(id) = self.sessions.next_expired(now) {
            self.end_session(id, "session_ended", true);
        }
        self.end_lock_delays();
        while let Some(id) = self.tasks.next_due(now) {
            let state = self.tasks.get(id).map(|task| task.state);
            match state {
                Some(TaskState::Assigned) => self.lose_lease(id, "lease_expired"),
                Some(TaskState::Pending | TaskState::Failed) => {
                    self.tasks.update(id, |task| {
                        task.timer_ms = None;
                        task.state = TaskState::Queued;
                    });
                }
                _ => {
                    self.tasks.update(id, |task| task.timer_ms = None);
                }
            }
        }
        self.remove_expired_tasks(now);
        self.advance_proposals();
        self.advance_two_phase();
        self.remove_idle_records();
    }

    /// The earliest cluster time at which something expires or becomes ready.
    pub fn next_due_ms(&self) -> Option<u64> {
        [
            self.sessions.next_expiry_ms(),
            self.tasks.next_timer_ms(),
            self.tasks
                .oldest_terminal()
                .map(|(at, _)| at.saturating_add(TaskLimits::current().retention_ms)),
            self.lock_delays.first().map(|(until, _)| *until),
            self.proposals.next_due_ms(),
            self.two_phase.next_due_ms(),
            self.next_idle_removal_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
