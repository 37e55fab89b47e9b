//! jepsen-like: Conclave's chaos harness.
//!
//! Layout: `cluster` starts real `conclave` processes on loopback and injects
//! process faults by PID; `nemesis` schedules faults from a seed and logs each with
//! proof it fired; `workloads` run sequential clients and record a `history`;
//! `checker` judges histories (`wgl`: linearizability per key); `run` drives the
//! phases and writes the report folder; `timeline` draws the report's latency picture.
pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod run;
pub mod timeline;
pub mod workloads;
