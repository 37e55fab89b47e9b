//! The openraft type configuration: what a log entry, a node and a snapshot are.
//!
//! A log entry's payload is a [`Batch`] of commands and its response a
//! [`BatchResponse`] (application-level batching, see `proposer`). Node ids are `u64`
//! and a node is known by two addresses: its client API's and its peer listener's
//! (`/raft/*`), which are separate so they can be firewalled apart.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::sm::{Batch, BatchResponse};

pub type NodeId = u64;

/// A cluster member as recorded in the replicated membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `host:port` of the node's client API (where requests are forwarded).
    pub addr: String,
    /// `host:port` of the node's peer listener (`/raft/*`, cluster secret only).
    pub raft_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (raft {})", self.addr, self.raft_addr)
    }
}

openraft::declare_raft_types!(
    /// Conclave's Raft types.
    pub TypeConfig:
        D = Batch,
        R = BatchResponse,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Member>;

/// What each peer acknowledged holding in the leader's current term: the highest
/// log index, by node, with the term it was acknowledged in. The peer network
/// (`transport::client`) records it and refuses to pass openraft a conflict below
/// it (a wiped node's: openraft would panic on the "log reversion"); membership
/// (`replica::membership`) forgets a node when it leaves, so a re-added node starts
/// afresh. Shared by clones.
#[derive(Debug, Clone, Default)]
pub struct PeerAcks(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<NodeId, (u64, u64)>>>,
);

impl PeerAcks {
    fn entries(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<NodeId, (u64, u64)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The highest index `node` acknowledged in `term`, if any.
    pub fn get(&self, node: NodeId, term: u64) -> Option<u64> {
        match self.entries().get(&node) {
            Some(&(acked_term, index)) if acked_term == term => Some(index),
            _ => None,
        }
    }

    /// Records that `node` holds the log up to `index` in `term`.
    pub fn record(&self, node: NodeId, term: u64, index: u64) {
        let mut entries = self.entries();
        let entry = entries.entry(node).or_insert((term, index));
        if entry.0 != term {
            *entry = (term, index);
        }
        entry.1 = entry.1.max(index);
    }

    /// Forgets `node` (it left the membership).
    pub fn forget(&self, node: NodeId) {
        self.entries().remove(&node);
    }
}
