//! Counting what openraft's metrics channel shows changing: the term (every
//! election this node saw, won or not) and the leader. The levels (term, indexes,
//! lag) are read at scrape time instead (`server::metrics`).
//!
//! Reads openraft's metrics channel only; must not act on what it sees.

use std::sync::Arc;

use super::Metrics;
use crate::raft_types::RaftMetrics;

/// Counts term and leader changes on `channel` until Raft stops.
pub async fn count_changes(
    mut channel: tokio::sync::watch::Receiver<RaftMetrics>,
    metrics: Arc<Metrics>,
) {
    let (mut term, mut leader) = {
        let now = channel.borrow();
        (now.current_term, now.current_leader)
    };
    while channel.changed().await.is_ok() {
        let (new_term, new_leader) = {
            let now = channel.borrow();
            (now.current_term, now.current_leader)
        };
        if new_term != term {
            metrics.raft.term_changes.inc();
            term = new_term;
        }
        if new_leader != leader {
            metrics.raft.leader_changes.inc();
            leader = new_leader;
        }
    }
}
