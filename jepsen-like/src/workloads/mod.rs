//! Workloads: sequential clients that record every operation's outcome.
pub mod register;
