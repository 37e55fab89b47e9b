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

/// Which format the cluster runs, as this node last applied it (`sm::State`'s
/// active format, set by the state machine store), and which format each peer
/// said it speaks (the `x-conclave-speaks` header of its replies, recorded by the
/// peer network). RPCs are sent in the active format, so nodes of the previous
/// release understand them until the cluster upgrades; the leader upgrades once
/// every member speaks this binary's format (`replica::ticker`). Shared by clones.
#[derive(Debug, Clone, Default)]
pub struct Formats {
    active: std::sync::Arc<std::sync::atomic::AtomicU32>,
    peers: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<NodeId, u32>>>,
}

impl Formats {
    /// The format the cluster runs (the previous one until it upgrades).
    pub fn active(&self) -> u32 {
        self.active
            .load(std::sync::atomic::Ordering::Acquire)
            .max(crate::codec::PREVIOUS_FORMAT_VERSION)
    }

    /// Records the format the applied state is in.
    pub fn set_active(&self, format: u32) {
        self.active
            .store(format, std::sync::atomic::Ordering::Release);
    }

    /// Records that `node` replied speaking `format`.
    pub fn heard(&self, node: NodeId, format: u32) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.insert(node, format);
    }

    /// The format `node` last said it speaks (`None`: not heard from yet).
    pub fn speaks(&self, node: NodeId) -> Option<u32> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(&node).copied()
    }
}
