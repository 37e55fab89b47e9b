//! The peer listener's router: node-to-node Raft RPCs under `/raft/*`, bincode
//! bodies, authenticated by the cluster secret, addressed to one node id, and
//! refused in a format this binary does not read.
//!
//! The whole `Result` of the local Raft call is encoded in a 200 response; the
//! caller (`client`) turns an `Err` into openraft's `RemoteError`. Refusals before
//! Raft sees the request (secret, target, format, cluster id, body, a snapshot chunk out of
//! order) are [`Refusal`]s: JSON errors with 4xx in the same shape as the client
//! API's, built here.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::raft::InstallSnapshotRequest;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::snapshot_receipt::{Chunk, SnapshotReceipt};
use super::{CLUSTER_HEADER, FORMAT_HEADER, SECRET_HEADER, TARGET_HEADER};
use crate::codec;
use crate::raft_types::{NodeId, Raft, TypeConfig};

/// What the peer listener needs. Built once by `node::run`.
pub struct Peers {
    pub node_id: NodeId,
    pub raft: Raft,
    pub cluster_secret: String,
    /// This node's cluster id: RPCs of another cluster are refused.
    pub identity: Arc<crate::store::ClusterIdentity>,
    /// Largest `/raft/*` body accepted.
    pub max_body_bytes: usize,
    /// Largest snapshot received (all chunks together).
    pub max_snapshot_bytes: u64,
    /// Which chunks of an incoming snapshot may be handed to Raft next.
    pub snapshot_receipt: tokio::sync::Mutex<SnapshotReceipt>,
    /// Set when the leader says this node was removed (`/raft/removed`); shared
    /// with the replica (`/ready`, the cluster view).
    pub removed: Arc<std::sync::atomic::AtomicBool>,
    /// How long a follower's read-index request may take here (`limits.read_timeout_ms`).
    pub read_timeout: std::time::Duration,
}

/// The `/raft/*` routes.
pub fn router(peers: Arc<Peers>) -> Router {
    let limit = peers.max_body_bytes;
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/campaign", post(campaign))
        .route("/raft/removed", post(removed))
        .route("/raft/read_index", post(read_index))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(peers)
}

/// Why a peer request was refused before Raft saw it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("missing or invalid cluster secret")]
    Unauthorized,
    #[error("this is node {this}, not node {target}")]
    WrongNode { this: NodeId, target: String },
    #[error("{0}")]
    OtherCluster(crate::store::identity::Mismatch),
    #[error("sender format {0:?}, this node reads {previous} and {this}", previous = codec::PREVIOUS_FORMAT_VERSION, this = codec::FORMAT_VERSION)]
    FormatMismatch(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("too large: the limit is {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    BodyTimeout(String),
    #[error("{0}")]
    InvalidSnapshotChunk(String),
}

impl Refusal {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::WrongNode { .. } => (StatusCode::MISDIRECTED_REQUEST, "wrong_node"),
            Self::FormatMismatch(_) => (StatusCode::BAD_REQUEST, "format_mismatch"),
            Self::OtherCluster(_) => (StatusCode::CONFLICT, "cluster_mismatch"),
            Self::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::InvalidSnapshotChunk(_) => (StatusCode::BAD_REQUEST, "invalid_snapshot_chunk"),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({ "error": { "code": code, "message": self.to_string() } });
        (status, axum::Json(body)).into_response()
    }
}

type PeerState = State<Arc<Peers>>;

/// Compares secrets in time independent of where they differ (`subtle`, the
/// RustCrypto / dalek constant-time primitives; a length mismatch is not secret).
fn secrets_match(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.ct_eq(expected).into()
}

/// Checks the headers, then reads and decodes the body.
async fn admit<T: DeserializeOwned>(peers: &Peers, request: Request) -> Result<T, Refusal> {
    let headers = request.headers();
    let secret = headers
        .get(SECRET_HEADER)
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    if !secrets_match(secret, peers.cluster_secret.as_bytes()) {
        return Err(Refusal::Unauthorized);
    }
    let target = headers
        .get(TARGET_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if target.parse::<u64>().ok() != Some(peers.node_id) {
        return Err(Refusal::WrongNode {
            this: peers.node_id,
            target: target.to_owned(),
        });
    }
    let format = headers
        .get(FORMAT_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !format.parse::<u32>().is_ok_and(codec::reads) {
        return Err(Refusal::FormatMismatch(format.to_owned()));
    }
    let cluster = headers
        .get(CLUSTER_HEADER)
        .map(|value| value.to_str().unwrap_or("\u{fffd}").to_owned());
    peers
        .identity
        .admit(cluster.as_deref())
        .await
        .map_err(Refusal::OtherCluster)?;
    let body = crate::body::read_limited(request.into_body(), peers.max_body_bytes)
        .await
        .map_err(|error| match error {
            crate::body::BodyError::TooLarge { limit } => Refusal::TooLarge { limit },
            crate::body::BodyError::TimedOut(message) => Refusal::BodyTimeout(message),
            malformed => Refusal::InvalidBody(malformed.to_string()),
        })?;
    codec::decode(&body).map_err(|e| Refusal::InvalidBody(e.to_string()))
}

/// `codec::FORMAT_VERSION`, as the `x-conclave-speaks` header says it.
const SPEAKS: &str = "8";

fn reply<T: Serialize>(result: &T) -> Response {
    match codec::encode(result) {
        Ok(bytes) => (
            [
                ("content-type", "application/octet-stream"),
                (super::SPEAKS_HEADER, SPEAKS),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("encoding the reply: {e}"),
        )
            .into_response(),
    }
}

pub async fn append(State(peers): PeerState, request: Request) -> Result<Response, Refusal> {
    let request = admit(&peers, request).await?;
    Ok(reply(&peers.raft.append_entries(request).await))
}

pub async fn vote(State(peers): PeerState, request: Request) -> Result<Response, Refusal> {
    let request = admit(&peers, request).await?;
    Ok(reply(&peers.raft.vote(request).await))
}

/// The last step of a leadership transfer (`replica::membership`): the leader of
/// term `T` (the body) asks this node to call an election now. Refused (`false`)
/// unless this node is still in term `T`, so a late request starts nothing.
pub async fn campaign(State(peers): PeerState, request: Request) -> Result<Response, Refusal> {
    let term: u64 = admit(&peers, request).await?;
    let current = peers.raft.metrics().borrow().current_term;
    if current != term {
        return Ok(reply(&false));
    }
    Ok(reply(&peers.raft.trigger().elect().await.is_ok()))
}

/// A follower's linearizable read (`replica::read_index`): confirm leadership with a
/// quorum and answer the read index (`Ok(index)`), or why not (`NotLeader` with a
/// hint, `Unavailable`). The body is empty.
pub async fn read_index(State(peers): PeerState, request: Request) -> Result<Response, Refusal> {
    let () = admit(&peers, request).await?;
    let answer = crate::replica::read_index::leader_read_index(&peers.raft, peers.read_timeout);
    Ok(reply(&answer.await))
}

/// The leader of term `T` (the body) removed this node: it stops campaigning (a
/// removed voter that missed the final membership entry would otherwise keep
/// calling elections) and says so in its log and `/ready`, until it is added again.
pub async fn removed(State(peers): PeerState, request: Request) -> Result<Response, Refusal> {
    let term: u64 = admit(&peers, request).await?;
    peers.raft.runtime_config().elect(false);
    peers
        .removed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::warn!(
        node_id = peers.node_id,
        term,
        "this node was removed from the cluster: it no longer campaigns, and /ready \
         answers 503 with \"member\": false; stop it, or add it again"
    );
    Ok(reply(&true))
}

pub async fn snapshot(State(peers): PeerState, request: Request) -> Result<Response, Refusal> {
    let request: InstallSnapshotRequest<TypeConfig> = admit(&peers, request).await?;
    // Held across the install so the receipt and Raft's buffer move together.
    let mut receipt = peers.snapshot_receipt.lock().await;
    let chunk = Chunk {
        snapshot_id: &request.meta.snapshot_id,
        offset: request.offset,
        len: request.data.len() as u64,
    };
    let end = receipt.admit(&chunk, peers.max_snapshot_bytes)?;
    let snapshot_id = request.meta.snapshot_id.clone();
    let done = request.done;
    let result = peers.raft.install_snapshot(request).await;
    if result.is_ok() {
        receipt.received(snapshot_id, end, done);
    }
    Ok(reply(&result))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_speaks_header_names_this_binarys_format() {
        assert_eq!(super::SPEAKS, crate::codec::FORMAT_VERSION.to_string());
    }
}
