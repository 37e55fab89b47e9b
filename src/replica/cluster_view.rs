//! The node-local cluster view a watch streams as `cluster` events: who leads, in
//! which term, the members, and how far each is behind (the leader's view).
//!
//! Leader and term are not replicated state, so they are not events of the log;
//! one task per node follows openraft's metrics and publishes a new view at once
//! when the role, leader, term or membership changed, and otherwise at most once
//! per `limits::CLUSTER_VIEW_REFRESH_MS` when only indexes or lag moved (not on every
//! apply), so watchers wake for what a dashboard shows, not for each write.
//!
//! Must not depend on the HTTP layer.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use crate::limits::CLUSTER_VIEW_REFRESH_MS;
use crate::raft_types::{NodeId, Raft};

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    pub id: NodeId,
    pub voter: bool,
    /// Entries behind the leader's log (known on the leader only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// The view at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// This node (the view is its own: a `cluster` event is node-local).
    pub node_id: NodeId,
    pub role: &'static str,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub members: Vec<MemberView>,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    /// The Raft log index of the membership entry this view's members come from.
    pub membership_index: Option<u64>,
}

/// Role, leader, term, (member, voter), membership entry: what a view is news for.
type ViewKey = (
    &'static str,
    Option<NodeId>,
    u64,
    Vec<(NodeId, bool)>,
    Option<u64>,
);

impl ClusterView {
    /// What makes a new view worth sending: not the indexes or the lag.
    fn key(&self) -> ViewKey {
        let members = self.members.iter().map(|m| (m.id, m.voter)).collect();
        (
            self.role,
            self.leader_id,
            self.term,
            members,
            self.membership_index,
        )
    }
}

fn view_of(node_id: NodeId, metrics: &crate::raft_types::RaftMetrics) -> ClusterView {
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let last = metrics.last_log_index.unwrap_or(0);
    let members = membership
        .nodes()
        .map(|(id, _)| MemberView {
            id: *id,
            voter: voters.contains(id),
            lag: metrics.replication.as_ref().map(|replication| {
                let matched = replication.get(id).cloned().flatten();
                last.saturating_sub(matched.map_or(0, |log_id| log_id.index))
            }),
        })
        .collect();
    ClusterView {
        node_id,
        role: super::membership::role_name(metrics.state),
        leader_id: metrics.current_leader,
        term: metrics.current_term,
        members,
        last_log_index: metrics.last_log_index,
        last_applied_index: metrics.last_applied.map(|log_id| log_id.index),
        membership_index: metrics
            .membership_config
            .log_id()
            .map(|log_id| log_id.index),
    }
}

/// Starts the task that follows `raft`'s metrics; returns the receiver to clone.
/// `removed` is set when the leader said this node was removed (`transport`'s
/// `/raft/removed`); the task clears it, and lets the node campaign again, once
/// the node is a member again.
pub fn spawn(
    node_id: NodeId,
    raft: Raft,
    removed: Arc<std::sync::atomic::AtomicBool>,
) -> watch::Receiver<Arc<ClusterView>> {
    let mut metrics = raft.metrics();
    let first = view_of(node_id, &metrics.borrow_and_update());
    let (publish, views) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        let mut published = tokio::time::Instant::now();
        while metrics.changed().await.is_ok() {
            let view = view_of(node_id, &metrics.borrow_and_update());
            let current = publish.borrow().clone();
            let news = view.key() != current.key();
            // Added again after a removal: a new membership entry lists it as a
            // learner (a re-add always starts as one; the joint entry of its own
            // removal lists it as a voter). It may campaign again once promoted.
            let learner = view.members.iter().any(|m| m.id == node_id && !m.voter);
            let new_entry = view.membership_index != current.membership_index;
            if learner && new_entry && removed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                raft.runtime_config().elect(true);
                tracing::info!(node_id, "added to the cluster again");
            }
            let refresh = view != *current
                && published.elapsed() >= std::time::Duration::from_millis(CLUSTER_VIEW_REFRESH_MS);
            if news || refresh {
                published = tokio::time::Instant::now();
                if publish.send(Arc::new(view)).is_err() {
                    return;
                }
            }
        }
    });
    views
}
