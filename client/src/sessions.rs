//! Sessions: `POST /v1/sessions`, keepalive, end, get and list.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::call::{Call, Retry};
use crate::{query_pairs, Client, Consistency, Error};

/// Body of `POST /v1/sessions`. Unset fields take the server's defaults
/// (capabilities `[]`, capacity 1, ttl 10 s, metadata `{}`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionCreate {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Answer of `POST /v1/sessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SessionCreated {
    pub session_id: u64,
    pub expires_at_ms: u64,
    pub index: u64,
}

/// Answer of a keepalive (from the leader's memory; no index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Keepalive {
    pub session_id: u64,
    pub expires_at_ms: u64,
}

/// Answer of `DELETE /v1/sessions/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SessionEnded {
    pub ended: bool,
    pub index: u64,
}

/// Query of `GET /v1/sessions`.
#[derive(Debug, Clone, Default)]
pub struct SessionList {
    /// Only sessions offering this capability.
    pub capability: Option<String>,
    pub after: Option<u64>,
    pub limit: Option<u32>,
    pub consistency: Consistency,
}

impl Client {
    /// `POST /v1/sessions`.
    pub async fn session_create(&self, create: &SessionCreate) -> Result<SessionCreated, Error> {
        self.write_idempotent(Method::POST, &["v1", "sessions"], create)
            .await
    }

    /// `POST /v1/sessions/{id}/keepalive` (idempotent by nature: retried like a
    /// read).
    pub async fn session_keepalive(&self, session_id: u64) -> Result<Keepalive, Error> {
        let id = session_id.to_string();
        self.send_empty(
            Method::POST,
            &["v1", "sessions", &id, "keepalive"],
            Retry::Repeatable,
        )
        .await?
        .decode()
    }

    /// A keepalive whose call ends within `timeout` and whose attempts each end
    /// within `attempt_timeout` (the session helper's renewals).
    pub(crate) async fn session_keepalive_within(
        &self,
        session_id: u64,
        timeout: std::time::Duration,
        attempt_timeout: std::time::Duration,
    ) -> Result<Keepalive, Error> {
        let id = session_id.to_string();
        let segments = ["v1", "sessions", id.as_str(), "keepalive"];
        let call =
            Call::new(Method::POST, &segments, Retry::Repeatable).within(timeout, attempt_timeout);
        self.execute(call).await?.decode()
    }

    /// `DELETE /v1/sessions/{id}` (takes no `request_id`: retried only when surely
    /// not applied; a repeat would answer `404 session_not_found`).
    pub async fn session_end(&self, session_id: u64) -> Result<SessionEnded, Error> {
        let id = session_id.to_string();
        self.send_empty(Method::DELETE, &["v1", "sessions", &id], Retry::Once)
            .await?
            .decode()
    }

    /// `GET /v1/sessions/{id}`: the session view, with its `load`.
    pub async fn session_get(
        &self,
        session_id: u64,
        consistency: Consistency,
    ) -> Result<Value, Error> {
        self.read(&["v1", "sessions", &session_id.to_string()], consistency)
            .await
    }

    /// `GET /v1/sessions`: `{"items": [view...], "next_after": id|null}`.
    pub async fn session_list(&self, list: &SessionList) -> Result<Value, Error> {
        let query = query_pairs(&[
            ("capability", list.capability.clone()),
            ("after", list.after.map(|after| after.to_string())),
            ("limit", list.limit.map(|limit| limit.to_string())),
        ]);
        self.read_query(&["v1", "sessions"], &query, list.consistency)
            .await
    }
}
