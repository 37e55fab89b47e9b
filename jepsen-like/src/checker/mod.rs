//! Checkers. `wgl`: linearizability of register histories (per key).
pub mod lease;
pub mod wgl;
