//! `conclave serve --join <addr>`: a node asks a member of an existing cluster to
//! add it as a voter, so growing a cluster is one command.
//!
//! Once this node serves (its peer listener must answer the leader's catch-up),
//! it sends `POST /v1/cluster/members {id, addr, raft_addr, voter: true, fresh}`
//! to the member it was pointed at, which forwards it to the leader; the leader
//! adds it as a learner, waits until it has caught up and promotes it (see
//! `replica::membership`). `fresh` says this node started with empty storage, so a
//! wiped node coming back under its old id is removed and re-added rather than
//! made a voter in place. The call is idempotent and retried (with backoff, at
//! most [`JOIN_ATTEMPTS`] times) on anything that says "not now" — no leader,
//! overloaded, a membership change in progress, the member unreachable — and
//! given up on a refusal that will not change (a bad token, a bad address). The
//! token (`join` or `admin` scope) is sent only to the member named; nothing
//! secret comes back.
//!
//! Must not depend on the HTTP server, the store or Raft's internals.

use std::time::Duration;

use serde_json::{json, Value};

use crate::limits::{
    JOIN_ATTEMPTS, JOIN_RETRY_BASE_MS, JOIN_RETRY_MAX_MS, MEMBERSHIP_REQUEST_TIMEOUT,
};
use crate::raft_types::NodeId;

/// What `--join` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// `host:port` of any member's client API.
    pub addr: String,
    /// A bearer token with `join` (or `admin`), sent with the request.
    pub token: Option<String>,
}

/// How the join went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// The cluster answered that this node is a voter.
    Voter,
    /// A refusal retrying will not change (status and body).
    Refused(u16, String),
    /// Every attempt met "not now" (the last answer or error).
    GaveUp(String),
}

/// Whether an answer may change if asked again.
fn transient(status: u16, body: &Value) -> bool {
    let code = body["error"]["code"].as_str().unwrap_or("");
    matches!(status, 429 | 503 | 504)
        || matches!(
            code,
            "membership_change_in_progress" | "learner_not_caught_up" | "no_leader"
        )
}

/// Asks `join.addr` to add node `id` (client API `addr`, peers `raft_addr`) as a
/// voter, retrying what is transient.
pub async fn run(
    http: &reqwest::Client,
    scheme: &str,
    join: &Join,
    id: NodeId,
    (addr, raft_addr): (&str, &str),
    fresh: bool,
) -> Joined {
    let url = format!("{scheme}://{}/v1/cluster/members", join.addr);
    let body =
        json!({"id": id, "addr": addr, "raft_addr": raft_addr, "voter": true, "fresh": fresh});
    let mut pause = Duration::from_millis(JOIN_RETRY_BASE_MS);
    let mut last = String::new();
    for attempt in 1..=JOIN_ATTEMPTS {
        let mut request = http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(MEMBERSHIP_REQUEST_TIMEOUT);
        if let Some(token) = &join.token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let bytes = response.bytes().await.unwrap_or_default();
                let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                if status == 200 {
                    return Joined::Voter;
                }
                if !transient(status, &answer) {
                    return Joined::Refused(status, answer.to_string());
                }
                last = format!("{status} {answer}");
            }
            Err(error) => last = error.to_string(),
        }
        tracing::warn!(attempt, join = %join.addr, "joining: {last}; trying again in {pause:?}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(JOIN_RETRY_MAX_MS));
    }
    Joined::GaveUp(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_now_is_retried_and_a_refusal_is_not() {
        let code = |code: &str| json!({"error": {"code": code}});
        assert!(transient(503, &code("no_leader")));
        assert!(transient(429, &code("overloaded")));
        assert!(transient(409, &code("membership_change_in_progress")));
        assert!(transient(409, &code("learner_not_caught_up")));
        assert!(!transient(401, &code("unauthenticated")));
        assert!(!transient(403, &code("forbidden")));
        assert!(!transient(400, &code("invalid_addr")));
        assert!(!transient(409, &code("member_conflict")));
    }
}
