//! Conclave: a Raft-replicated coordination server.
pub mod codec;
pub mod limits;
pub mod raft_types;
pub mod sm;
pub mod store;
