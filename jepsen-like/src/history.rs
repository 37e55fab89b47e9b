//! The history of a run: one record per client operation, with invoke and complete
//! times from one monotonic clock, and its outcome. Written as JSON lines.

use serde::{Deserialize, Serialize};

/// How an operation ended, following the server's error contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged: it took effect (a read returned a value).
    Ok,
    /// Definitely not applied (4xx from the state machine, a refused CAS, 503).
    Fail,
    /// Maybe applied: a timeout, a lost connection after sending, a 504.
    Unknown,
}

/// A register operation on one key. Values are unique per key (except `None`,
/// meaning absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "f")]
pub enum RegisterOp {
    /// `value` is what the read returned (`None` = key absent); meaningful only when
    /// the outcome is `Ok`.
    Read {
        value: Option<i64>,
    },
    Write {
        value: i64,
    },
    /// Compare-and-set from `expected` (`None` = must be absent) to `value`. A refused
    /// CAS (the server said the precondition failed) has outcome `Fail`.
    Cas {
        expected: Option<i64>,
        value: i64,
    },
}

/// One operation of one sequential client process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub process: u64,
    pub key: String,
    pub op: RegisterOp,
    pub outcome: Outcome,
    /// Nanoseconds since the run started (one monotonic clock for all clients).
    pub invoke_ns: u64,
    /// `None` for an operation whose outcome is `Unknown` (treated as completing
    /// at +infinity).
    pub complete_ns: Option<u64>,
    /// Which node the client sent it to, for the report.
    #[serde(default)]
    pub node: u64,
}
