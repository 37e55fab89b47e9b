//! `GET /metrics`: sets the gauges of what is a level (Raft's positions and lag,
//! the state's sizes, queue depths) and copies the counters kept elsewhere
//! (admission, the watch hub), then encodes every metric (`crate::metrics`) as
//! Prometheus text. Served locally; the metrics themselves are defined and listed
//! in `crate::metrics` and `docs/observability.md`.
//!
//! Cost: one Raft facts read, one read lock of the state for its sizes and one
//! pass over the stored tasks (at most `limits::MAX_TASKS`), so a scrape every
//! few seconds is cheap but not free.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::{catch_up, level, FollowerLabels, Metrics, StateLabels};
use crate::replica::membership::RaftFacts;

/// Every task state, so each has a sample (0 when none).
const TASK_STATES: [&str; 7] = [
    "pending",
    "queued",
    "assigned",
    "succeeded",
    "failed",
    "dead",
    "cancelled",
];

pub async fn metrics(State(app): State<AppState>) -> Response {
    let facts = app.replica.raft_facts().await;
    let metrics = &app.metrics;
    let _scrape = metrics.scrape.lock().await;
    raft_levels(metrics, &facts, app.node_id);
    state_levels(metrics, &app.replica.state());
    let queued = app.replica.proposer_queued() as u64;
    metrics.proposer.queue_depth.set(level(queued));
    let http = &metrics.http;
    let forwards = app.admission.forwards_inflight() as u64;
    http.forwards_inflight.set(level(forwards));
    catch_up(&http.admission_refused, app.admission.refused());
    let hub = app.replica.hub();
    let (stats, watch) = (&hub.stats, &metrics.watch);
    watch
        .watchers
        .set(level(stats.watchers.load(Ordering::Relaxed)));
    catch_up(
        &watch.events_sent,
        stats.events_sent.load(Ordering::Relaxed),
    );
    catch_up(&watch.lagged, stats.lagged.load(Ordering::Relaxed));
    catch_up(&watch.compacted, stats.compacted.load(Ordering::Relaxed));
    watch.oldest_index.set(level(hub.bounds().0));
    let text = metrics.encode();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

/// Raft's positions from this node's facts; the replication lag of each other
/// member on the leader only (elsewhere the family is empty).
fn raft_levels(metrics: &Metrics, facts: &RaftFacts, node_id: u64) {
    let raft = &metrics.raft;
    let leads = facts.role == "leader";
    let last = facts.last_log_index.unwrap_or(0);
    let commit = facts.commit_index.unwrap_or(0);
    let applied = facts.last_applied_index.unwrap_or(0);
    raft.node_id.set(level(node_id));
    raft.term.set(level(facts.term));
    raft.is_leader.set(i64::from(leads));
    raft.leader_id.set(level(facts.leader_id.unwrap_or(0)));
    raft.last_log_index.set(level(last));
    raft.commit_index.set(level(commit));
    raft.applied_index.set(level(applied));
    raft.apply_lag.set(level(commit.saturating_sub(applied)));
    raft.snapshot_index
        .set(level(facts.snapshot_index.unwrap_or(0)));
    // Members come and go: only the current ones have a sample.
    raft.replication_lag.clear();
    if leads {
        for member in facts.members.iter().filter(|m| m.id != node_id) {
            let lag = last.saturating_sub(member.matched_index.unwrap_or(0));
            let labels = FollowerLabels {
                follower: member.id,
            };
            raft.replication_lag.get_or_create(&labels).set(level(lag));
        }
    }
}

/// The applied state's sizes, under its read lock (held for one pass over the
/// tasks).
fn state_levels(metrics: &Metrics, state: &crate::sm::State) {
    let gauges = &metrics.state;
    gauges.command_index.set(level(state.last_command_index));
    gauges.kv_keys.set(level(state.kv.len() as u64));
    gauges.request_ids.set(level(state.requests.len() as u64));
    gauges.sessions_live.set(level(state.sessions.len() as u64));
    let mut counts = [0i64; TASK_STATES.len()];
    for task in state.tasks.range_from(None) {
        if let Some(at) = TASK_STATES.iter().position(|s| *s == task.state.name()) {
            counts[at] += 1;
        }
    }
    for (state, count) in TASK_STATES.into_iter().zip(counts) {
        gauges
            .tasks
            .get_or_create(&StateLabels { state })
            .set(count);
    }
}
