//! `POST /v1/txn`: one atomic log entry over KV and primitives (compare, then the
//! success or the failure ops), as a typed [`Txn`] of [`TxnCompare`]s and
//! [`TxnOp`]s, and its [`TxnResult`]. Built on `lib.rs`'s write plumbing and the
//! request types of `tasks.rs` and `primitives.rs` only; must not depend on the
//! agent helpers.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Client, Error, LockMode, TaskSubmit};

/// One comparison; all of a transaction's must hold for its `success` ops to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TxnCompare {
    /// The key's version is `version` (`0`: the key does not exist).
    KeyVersion { key: String, version: u64 },
    /// The key exists (`true`) or not.
    KeyExists { key: String, exists: bool },
    /// The key's value equals `value` as parsed JSON.
    KeyValue { key: String, value: Value },
    /// The lock is held with this token.
    LockToken { lock: String, fencing_token: u64 },
    /// The election has a leader and `term` is its current term.
    ElectionTerm { election: String, term: u64 },
    /// The task exists in this state.
    TaskState { task: u64, state: String },
}

/// One op of a branch, sent as `{"<op>": {...}}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnOp {
    Put {
        key: String,
        value: Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        if_version: Option<u64>,
        /// Makes the key ephemeral, bound to this session.
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<u64>,
    },
    Delete {
        key: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        if_version: Option<u64>,
    },
    /// A task submit; its `request_id` and `guard` must be unset (the transaction's
    /// `request_id` covers it), else `400 invalid_txn`.
    SubmitTask(TaskSubmit),
    CancelTask {
        task_id: u64,
    },
    /// Never waits.
    AcquireLock {
        name: String,
        session_id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        mode: Option<LockMode>,
    },
    ReleaseLock {
        name: String,
        session_id: u64,
        fencing_token: u64,
    },
    /// Never waits.
    AcquireSemaphore {
        name: String,
        session_id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        permits: Option<u32>,
        limit: u32,
    },
    ReleaseSemaphore {
        name: String,
        session_id: u64,
        fencing_token: u64,
    },
}

/// Body of `POST /v1/txn`. An op that would be refused refuses the whole
/// transaction (`409` with the op's code and `op_index` in the error's details);
/// a failed compare is not a refusal: it selects `failure`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Txn {
    pub compare: Vec<TxnCompare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
    /// Makes the whole transaction idempotent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Answer of `POST /v1/txn`: which branch ran, and one result per op of it, as the
/// op's own endpoint words it without `index` (every op's is the transaction's).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TxnResult {
    pub succeeded: bool,
    pub index: u64,
    pub results: Vec<Value>,
}

impl Client {
    /// `POST /v1/txn`.
    pub async fn txn(&self, txn: &Txn) -> Result<TxnResult, Error> {
        self.write_idempotent(Method::POST, &["v1", "txn"], txn)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_txn_body_has_the_apis_shapes() {
        let txn = Txn {
            compare: vec![
                TxnCompare::KeyVersion {
                    key: "a".into(),
                    version: 0,
                },
                TxnCompare::LockToken {
                    lock: "db".into(),
                    fencing_token: 4,
                },
                TxnCompare::TaskState {
                    task: 9,
                    state: "done".into(),
                },
            ],
            success: vec![
                TxnOp::Put {
                    key: "a".into(),
                    value: json!(1),
                    if_version: None,
                    session_id: None,
                },
                TxnOp::SubmitTask(TaskSubmit {
                    kind: "k".into(),
                    ..TaskSubmit::default()
                }),
                TxnOp::AcquireLock {
                    name: "db".into(),
                    session_id: 2,
                    mode: Some(LockMode::Shared),
                },
            ],
            failure: vec![TxnOp::CancelTask { task_id: 9 }],
            request_id: None,
        };
        assert_eq!(
            serde_json::to_value(&txn).unwrap(),
            json!({
                "compare": [{"key": "a", "version": 0}, {"lock": "db", "fencing_token": 4},
                            {"task": 9, "state": "done"}],
                "success": [{"put": {"key": "a", "value": 1}}, {"submit_task": {"kind": "k"}},
                            {"acquire_lock": {"name": "db", "session_id": 2, "mode": "shared"}}],
                "failure": [{"cancel_task": {"task_id": 9}}],
            })
        );
    }
}
