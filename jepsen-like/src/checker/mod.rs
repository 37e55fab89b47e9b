//! Checkers. `wgl`: linearizability of register histories (per key).
pub mod wgl;
