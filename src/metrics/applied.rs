//! Metrics derived from what the store applied: [`Metrics`] is the store's
//! `ApplyObserver`, counting each entry's events (by type, sessions expired,
//! leases expired, holds lost, decisions) and timing task assignments in cluster
//! time, and recording every snapshot built.
//!
//! Every replica applies the same events, so these counters agree across nodes
//! once they have applied the same log (since their start): aggregate them with
//! `max`, not `sum`. They restart from zero with the process.
//!
//! Runs under the state's write lock: a match and a few atomic adds per event, no
//! allocation. Must not change the state or depend on anything but its reading.

use std::time::Duration;

use super::{level, DecisionLabels, LostLabels, Metrics, TypeLabels};
use crate::sm::events::{Event, EventBody, LostReason};
use crate::sm::State;

/// A decision's outcome as a label from a fixed list (`other` for a name this
/// list lacks, so the label set stays bounded whatever the state machine says).
fn outcome(state: &str) -> &'static str {
    ["accepted", "rejected", "expired", "committed", "aborted"]
        .into_iter()
        .find(|known| *known == state)
        .unwrap_or("other")
}

fn reason(reason: LostReason) -> &'static str {
    match reason {
        LostReason::SessionExpired => "session_expired",
        LostReason::SessionEnded => "session_ended",
    }
}

impl Metrics {
    fn lost(&self, primitive: &'static str, why: LostReason) {
        let labels = LostLabels {
            primitive,
            reason: reason(why),
        };
        self.state.holds_lost.get_or_create(&labels).inc();
    }

    fn decided(&self, kind: &'static str, state: &str) {
        let labels = DecisionLabels {
            kind,
            outcome: outcome(state),
        };
        self.state.decisions.get_or_create(&labels).inc();
    }

    /// A task assigned at the state's cluster time: the time since it
    /// could first run this attempt (submitted, its delay or its retry backoff
    /// over). A task with dependencies is left out: when its last dependency
    /// succeeded is not recorded, so its wait would count theirs.
    fn assigned(&self, task_id: u64, state: &State) {
        let Some(task) = state.tasks.get(task_id) else {
            return;
        };
        if !task.spec.depends_on.is_empty() {
            return;
        }
        let runnable_ms = task.created_at_ms.max(task.not_before_ms);
        let waited_ms = state.cluster_time_ms.saturating_sub(runnable_ms);
        self.state
            .task_assignment_latency_seconds
            .observe(waited_ms as f64 / 1000.0);
    }

    fn count(&self, event: &Event, state: &State) {
        use EventBody::*;
        let r#type = event.body.type_name();
        self.state
            .events_applied
            .get_or_create(&TypeLabels { r#type })
            .inc();
        match &event.body {
            SessionExpired { .. } => {
                self.state.sessions_expired.inc();
            }
            // Not `TaskClaimed`: a claim takes a task already assigned to the
            // session, and counting it too would count the assignment twice.
            TaskAssigned { task_id, .. } => self.assigned(*task_id, state),
            TaskRetrying { reason, .. } | TaskDead { reason, .. } if reason == "lease_expired" => {
                self.state.task_lease_expirations.inc();
            }
            LockLost { reason, .. } => self.lost("lock", *reason),
            SemaphoreLost { reason, .. } => self.lost("semaphore", *reason),
            ElectionLost { reason, .. } => self.lost("election", *reason),
            ProposalDecided { state, .. } => self.decided("proposal", state),
            TwoPhaseDecided { state, .. } => self.decided("2pc", state),
            _ => {}
        }
    }
}

impl crate::store::ApplyObserver for Metrics {
    fn applied(&self, events: &[Event], state: &State) {
        for event in events {
            self.count(event, state);
        }
    }

    fn snapshot_built(&self, bytes: usize, took: Duration) {
        self.raft.snapshot_bytes.set(level(bytes as u64));
        self.raft.snapshot_build_seconds.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ApplyObserver;

    fn event(body: EventBody) -> Event {
        Event { index: 1, body }
    }

    #[test]
    fn applied_events_are_counted_by_type_and_meaning() {
        let metrics = Metrics::new();
        let state = State::default();
        let events = [
            event(EventBody::SessionExpired { session_id: 1 }),
            event(EventBody::LockLost {
                name: "a".into(),
                session_id: 1,
                fencing_token: 3,
                reason: LostReason::SessionExpired,
            }),
            event(EventBody::TwoPhaseDecided {
                id: 4,
                state: "committed".into(),
                reason: None,
            }),
            event(EventBody::ProposalDecided {
                proposal_id: 5,
                state: "something new".into(),
            }),
        ];
        metrics.applied(&events, &state);
        assert_eq!(metrics.state.sessions_expired.get(), 1);
        let lost = LostLabels {
            primitive: "lock",
            reason: "session_expired",
        };
        assert_eq!(metrics.state.holds_lost.get_or_create(&lost).get(), 1);
        let committed = DecisionLabels {
            kind: "2pc",
            outcome: "committed",
        };
        assert_eq!(metrics.state.decisions.get_or_create(&committed).get(), 1);
        let other = DecisionLabels {
            kind: "proposal",
            outcome: "other",
        };
        assert_eq!(metrics.state.decisions.get_or_create(&other).get(), 1);
        let expired = TypeLabels {
            r#type: "session.expired",
        };
        assert_eq!(
            metrics.state.events_applied.get_or_create(&expired).get(),
            1
        );
    }

    #[test]
    fn a_snapshot_build_sets_its_size_and_times_it() {
        let metrics = Metrics::new();
        metrics.snapshot_built(1234, Duration::from_millis(20));
        assert_eq!(metrics.raft.snapshot_bytes.get(), 1234);
        let text = metrics.encode();
        assert!(
            text.contains("\nconclave_raft_snapshot_build_seconds_count 1\n"),
            "{text}"
        );
    }
}
