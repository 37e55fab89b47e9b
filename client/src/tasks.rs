//! Tasks: submit, claim (long poll), heartbeat, complete, fail, cancel, retry, get
//! and list.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::call::{Call, Retry};
use crate::{query_pairs, Client, Consistency, Error};

/// Body of `POST /v1/tasks`. Unset fields take the server's defaults.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskSubmit {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_capabilities: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// A delay from submission, not an instant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Answer of `POST /v1/tasks`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskSubmitted {
    pub task_id: u64,
    pub state: String,
    /// `true` when the `idempotency_key` matched an earlier task.
    pub existing: bool,
    pub index: u64,
}

/// Answer of `POST /v1/tasks/claim` (`200`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Claimed {
    /// The full task view.
    pub task: Value,
    pub fencing_token: u64,
    pub lease_expires_at_ms: u64,
    pub index: u64,
}

/// Body of `POST /v1/tasks/{id}/heartbeat`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Heartbeat {
    pub fencing_token: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Answer of a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct HeartbeatSent {
    /// `0` when the task was cancelled.
    pub lease_expires_at_ms: u64,
    pub cancel_requested: bool,
    pub index: u64,
}

/// Body of `POST /v1/tasks/{id}/complete`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskComplete {
    pub fencing_token: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Body of `POST /v1/tasks/{id}/fail`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskFail {
    pub fencing_token: u64,
    pub error: String,
    /// Default `true`; `false` dead-letters at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Answer of complete, fail, cancel and retry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskWritten {
    pub task_id: u64,
    pub state: String,
    pub index: u64,
}

/// Query of `GET /v1/tasks`.
#[derive(Debug, Clone, Default)]
pub struct TaskList {
    /// One of the seven state names.
    pub state: Option<String>,
    pub kind: Option<String>,
    pub after: Option<u64>,
    pub limit: Option<u32>,
    pub consistency: Consistency,
}

#[derive(Serialize)]
struct ClaimBody {
    session_id: u64,
    wait_ms: u64,
}

/// Body of cancel and retry: both optional.
#[derive(Serialize)]
struct Optional<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl Client {
    /// `POST /v1/tasks`.
    pub async fn task_submit(&self, submit: &TaskSubmit) -> Result<TaskSubmitted, Error> {
        self.write_idempotent(Method::POST, &["v1", "tasks"], submit)
            .await
    }

    /// `POST /v1/tasks/claim`: waits up to `wait_ms` for a task assigned to the
    /// session; `None` when the wait ends with nothing (`204`).
    pub async fn task_claim(
        &self,
        session_id: u64,
        wait_ms: u64,
    ) -> Result<Option<Claimed>, Error> {
        let body = ClaimBody {
            session_id,
            wait_ms,
        };
        let body = serde_json::to_value(body).expect("a claim body serializes");
        // No request_id: a claim whose answer was lost is not repeated (the task
        // stays claimed by the session; docs/api.md, claim).
        let call = Call::new(Method::POST, &["v1", "tasks", "claim"], Retry::Once).body(body);
        self.execute(call).await?.decode_optional()
    }

    /// `POST /v1/tasks/{id}/heartbeat`.
    pub async fn task_heartbeat(
        &self,
        task_id: u64,
        heartbeat: &Heartbeat,
    ) -> Result<HeartbeatSent, Error> {
        self.task_write(Method::POST, task_id, Some("heartbeat"), heartbeat)
            .await
    }

    /// `POST /v1/tasks/{id}/complete`.
    pub async fn task_complete(
        &self,
        task_id: u64,
        complete: &TaskComplete,
    ) -> Result<TaskWritten, Error> {
        self.task_write(Method::POST, task_id, Some("complete"), complete)
            .await
    }

    /// `POST /v1/tasks/{id}/fail`.
    pub async fn task_fail(&self, task_id: u64, fail: &TaskFail) -> Result<TaskWritten, Error> {
        self.task_write(Method::POST, task_id, Some("fail"), fail)
            .await
    }

    /// `DELETE /v1/tasks/{id}`: cancels it and its dependents.
    pub async fn task_cancel(
        &self,
        task_id: u64,
        request_id: Option<&str>,
    ) -> Result<TaskWritten, Error> {
        self.task_write(Method::DELETE, task_id, None, &Optional { request_id })
            .await
    }

    /// `POST /v1/tasks/{id}/retry`: redrives a `dead` task.
    pub async fn task_retry(
        &self,
        task_id: u64,
        request_id: Option<&str>,
    ) -> Result<TaskWritten, Error> {
        self.task_write(
            Method::POST,
            task_id,
            Some("retry"),
            &Optional { request_id },
        )
        .await
    }

    /// `GET /v1/tasks/{id}`: the task view.
    pub async fn task_get(&self, task_id: u64, consistency: Consistency) -> Result<Value, Error> {
        self.read(&["v1", "tasks", &task_id.to_string()], consistency)
            .await
    }

    /// `GET /v1/tasks`: `{"items": [view...], "next_after": id|null}`.
    pub async fn task_list(&self, list: &TaskList) -> Result<Value, Error> {
        let query = query_pairs(&[
            ("state", list.state.clone()),
            ("kind", list.kind.clone()),
            ("after", list.after.map(|after| after.to_string())),
            ("limit", list.limit.map(|limit| limit.to_string())),
        ]);
        self.read_query(&["v1", "tasks"], &query, list.consistency)
            .await
    }

    async fn task_write<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        task_id: u64,
        action: Option<&str>,
        body: &B,
    ) -> Result<T, Error> {
        let id = task_id.to_string();
        let mut segments = vec!["v1", "tasks", id.as_str()];
        segments.extend(action);
        self.write_idempotent(method, &segments, body).await
    }
}
