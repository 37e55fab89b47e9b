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
