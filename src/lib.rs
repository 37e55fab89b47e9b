//! Conclave: a Raft-replicated coordination server.
pub mod body;
pub mod codec;
pub mod config;
pub mod limits;
pub mod node;
pub mod proposer;
pub mod raft_types;
pub mod read_index;
pub mod server;
pub mod sm;
pub mod store;
pub mod ticker;
pub mod transport;
