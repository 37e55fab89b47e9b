//! Peer traffic: the Raft RPCs between nodes, client and server, apart from the
//! client API.
//!
//! `client` is openraft's network (one pooled HTTP client, bincode bodies);
//! `server` is the `/raft/*` router each node serves, admitting only requests that
//! carry the cluster secret, this cluster's id, this node's id and a format
//! version this binary reads (its own or the previous one, for rolling upgrades);
//! `snapshot_receipt` admits snapshot chunks in order. Besides openraft's RPCs the
//! peer listener serves a leadership transfer's last step, a removed node's notice and
//! a follower's read-index request (`replica::read_index`). This module must not depend
//! on the client API (`server`: its `ApiError`, extractors or handlers) so peer and
//! client traffic stay apart; `node` composes the two routers.

pub mod client;
pub mod server;
mod snapshot_receipt;

#[cfg(test)]
mod decode_fuzz_tests;

pub use client::Network;
pub use server::{router, Peers};

/// Header carrying the cluster secret on `/raft/*`.
pub const SECRET_HEADER: &str = "x-conclave-secret";
/// Header carrying the node id the RPC is meant for.
pub const TARGET_HEADER: &str = "x-conclave-target";
/// Header carrying the sender's cluster id (`store::identity`).
pub const CLUSTER_HEADER: &str = "x-conclave-cluster";
/// Header carrying the format the request is encoded in: the cluster's active
/// format (`raft_types::Formats`).
pub const FORMAT_HEADER: &str = "x-conclave-format";
/// Header of every `/raft/*` reply: the newest format the replying node speaks. A
/// node of the previous release sends none (it speaks the previous format).
pub const SPEAKS_HEADER: &str = "x-conclave-speaks";
