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

/// Answer of a complete or fail with `claim_next`: the finished task's state, and
/// the session's next task when one was claimed within the wait (`None`: none).
/// `next.index == index` when it was claimed in the same command.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Finished {
    pub task_id: u64,
    pub state: String,
    pub index: u64,
    pub next: Option<Claimed>,
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

    /// `POST /v1/tasks/{id}/complete` with `claim_next`: completes the task and
    /// claims the holder session's next one, waiting up to `wait_ms` for it — a
    /// task cycle's second request (docs/api.md). With `wait_ms == 0` the whole is
    /// one command and its same-`request_id` retry answers the first answer, so it
    /// is retried like any idempotent write; with a wait, the claim may come from a
    /// later command, so like a claim it is not repeated after an unknown outcome
    /// (a lost answer may have claimed a task, which stays the session's until its
    /// lease ends).
    pub async fn task_complete_and_claim(
        &self,
        task_id: u64,
        complete: &TaskComplete,
        wait_ms: u64,
    ) -> Result<Finished, Error> {
        self.task_finish_and_claim(task_id, "complete", crate::to_value(complete)?, wait_ms)
            .await
    }

    /// `POST /v1/tasks/{id}/fail` with `claim_next` (as [`Self::task_complete_and_claim`]).
    pub async fn task_fail_and_claim(
        &self,
        task_id: u64,
        fail: &TaskFail,
        wait_ms: u64,
    ) -> Result<Finished, Error> {
        self.task_finish_and_claim(task_id, "fail", crate::to_value(fail)?, wait_ms)
            .await
    }

    async fn task_finish_and_claim(
        &self,
        task_id: u64,
        action: &str,
        mut body: Value,
        wait_ms: u64,
    ) -> Result<Finished, Error> {
        body["claim_next"] = serde_json::json!({ "wait_ms": wait_ms });
        let id = task_id.to_string();
        let segments = ["v1", "tasks", id.as_str(), action];
        if wait_ms == 0 {
            return self.write_idempotent(Method::POST, &segments, &body).await;
        }
        let call = Call::new(Method::POST, &segments, Retry::Once).body(body);
        self.execute(call).await?.decode()
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
