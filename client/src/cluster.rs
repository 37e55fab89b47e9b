//! Cluster and node operations: `GET /v1/cluster`, member add/remove/promote,
//! leadership transfer, snapshot, `GET /v1/requests/{request_id}`, `/health`,
//! `/ready`, `GET /v1/debug/state` and `/metrics`. These are served by the
//! receiving node unless noted, so the answer is that node's view.

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::call::{Call, Retry};
use crate::{Client, Consistency, Error};

/// Body of `POST /v1/cluster/members`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemberAdd {
    pub id: u64,
    /// `host:port` of its client API.
    pub addr: String,
    /// `host:port` of its peer listener (server default: `addr`'s port + 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_addr: Option<String>,
    /// Promote to voter after catch-up (server default `true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voter: Option<bool>,
}

/// Answer of `POST /v1/cluster/snapshot` (a Raft log index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Snapshot {
    pub snapshot_index: Option<u64>,
}

/// Answer of `GET /health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Health {
    pub node_id: u64,
}

/// Body of `GET /ready` (the same for `200` and `503`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Ready {
    pub ready: bool,
    pub leader_id: Option<u64>,
    pub commit_index: Option<u64>,
    pub last_applied_index: Option<u64>,
}

/// Answer of `GET /v1/debug/state`: the node's applied position and a hash of its
/// whole state (equal applied index must mean equal hash).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DebugState {
    pub node_id: u64,
    /// Raft log index of the last applied entry (`None` before any).
    pub last_applied_index: Option<u64>,
    pub last_command_index: u64,
    pub cluster_time_ms: u64,
    /// 16 hex digits.
    pub state_hash: String,
}

impl Client {
    /// `GET /v1/cluster`: this node's view of Raft and the membership.
    pub async fn cluster_info(&self) -> Result<Value, Error> {
        let call = Call::new(Method::GET, &["v1", "cluster"], Retry::Repeatable).pinned();
        self.execute(call).await?.decode()
    }

    /// `POST /v1/cluster/members` (leader route): the cluster view after the change.
    pub async fn member_add(&self, member: &MemberAdd) -> Result<Value, Error> {
        self.write(Method::POST, &["v1", "cluster", "members"], member)
            .await
    }

    /// Promotes learner `node_id` to voter: reads its recorded addresses from this
    /// node's `GET /v1/cluster` and repeats the add with `voter: true`, which the
    /// leader answers once the learner has caught up and was promoted (`409
    /// learner_not_caught_up` if it did not within the server's wait; call again).
    /// A voter already is left as it is (`200`). [`Error::NotMember`] if the node is
    /// not in the membership.
    pub async fn member_promote(&self, node_id: u64) -> Result<Value, Error> {
        let view = self.cluster_info().await?;
        let member = view["members"]
            .as_array()
            .and_then(|members| members.iter().find(|m| m["id"].as_u64() == Some(node_id)))
            .ok_or(Error::NotMember(node_id))?;
        let text = |field: &str| member[field].as_str().map(str::to_owned);
        let add = MemberAdd {
            id: node_id,
            addr: text("addr").ok_or(Error::NotMember(node_id))?,
            raft_addr: text("raft_addr"),
            voter: Some(true),
        };
        self.member_add(&add).await
    }

    /// `POST /v1/cluster/leader` (leader route): hands leadership to voter `to`
    /// (or the most caught-up other voter); the cluster view after.
    pub async fn leader_transfer(&self, to: Option<u64>) -> Result<Value, Error> {
        let body = serde_json::json!({ "to": to });
        self.write(Method::POST, &["v1", "cluster", "leader"], &body)
            .await
    }

    /// `DELETE /v1/cluster/members/{id}` (leader route): the cluster view after.
    pub async fn member_remove(&self, node_id: u64) -> Result<Value, Error> {
        let id = node_id.to_string();
        self.send_empty(
            Method::DELETE,
            &["v1", "cluster", "members", &id],
            Retry::Once,
        )
        .await?
        .decode()
    }

    /// `POST /v1/cluster/snapshot`: builds a snapshot on this node and waits for it.
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        let call = Call::new(Method::POST, &["v1", "cluster", "snapshot"], Retry::Once).pinned();
        self.execute(call).await?.decode()
    }

    /// `GET /v1/requests/{request_id}`: `{applied: true, index, applied_at_ms,
    /// result}` or `{applied: false, retention_ms}`.
    pub async fn request_get(
        &self,
        request_id: &str,
        consistency: Consistency,
    ) -> Result<Value, Error> {
        self.read(&["v1", "requests", request_id], consistency)
            .await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Health, Error> {
        let call = Call::new(Method::GET, &["health"], Retry::Repeatable).pinned();
        self.execute(call).await?.decode()
    }

    /// `GET /v1/debug/state` of the first endpoint (`admin`).
    pub async fn debug_state(&self) -> Result<DebugState, Error> {
        let call = Call::new(Method::GET, &["v1", "debug", "state"], Retry::Repeatable).pinned();
        self.execute(call).await?.decode()
    }

    /// `GET /metrics` of the first endpoint: the Prometheus text.
    pub async fn metrics_text(&self) -> Result<String, Error> {
        let call = Call::new(Method::GET, &["metrics"], Retry::Repeatable).pinned();
        let crate::call::Answer { status, body } = self.execute(call).await?;
        if !status.is_success() {
            return Err(crate::error::from_error_body(status.as_u16(), &body));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET /ready`: `Ok` for both `200` and `503` (check `ready`).
    pub async fn ready(&self) -> Result<Ready, Error> {
        let call = Call::new(Method::GET, &["ready"], Retry::Repeatable).pinned();
        let crate::call::Answer { status, body } = self.execute(call).await?;
        if status != StatusCode::OK && status != StatusCode::SERVICE_UNAVAILABLE {
            return Err(crate::error::from_error_body(status.as_u16(), &body));
        }
        serde_json::from_slice(&body).map_err(|_| Error::Unexpected {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}
