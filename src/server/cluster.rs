//! Cluster and operations endpoints: `/v1/cluster`, membership changes, snapshots,
//! `/health`, `/ready` (`/metrics` is `metrics`). Raft is reached only through the replica's
//! `membership` facts and operations, never openraft itself.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::extract::{JsonBody, PathParam};
use super::AppState;
use crate::raft_types::NodeId;
use crate::replica::membership::MembershipError;

/// The error a refused or unfinished membership change answers.
fn membership_error(error: MembershipError) -> ApiError {
    let message = error.to_string();
    match error {
        MembershipError::NotLeader { leader } => ApiError::NoLeader { leader },
        MembershipError::InProgress(_) => {
            ApiError::conflict(ErrorCode::MembershipChangeInProgress, message)
        }
        MembershipError::EmptyMembership(_) => {
            ApiError::conflict(ErrorCode::EmptyMembership, message)
        }
        MembershipError::LearnerNotFound(_) => {
            ApiError::conflict(ErrorCode::LearnerNotFound, message)
        }
        MembershipError::NotMember { .. } => ApiError::NotFound {
            code: ErrorCode::MemberNotFound,
            message,
        },
        MembershipError::NotCaughtUp {
            matched, target, ..
        } => ApiError::NotCaughtUp {
            message: format!(
                "{message}; it was not promoted (check its address and cluster_secret, then POST again or remove it)"
            ),
            matched_index: matched,
            target_index: target,
        },
        MembershipError::Indeterminate(message) => ApiError::Indeterminate(message),
        MembershipError::Conflict(message) => ApiError::conflict(ErrorCode::MemberConflict, message),
    }
}

pub async fn info(State(app): State<AppState>) -> Response {
    let facts = app.replica.raft_facts().await;
    // Entries each member is behind the leader's log: known on the leader only.
    let leads = facts.role == "leader";
    let last = facts.last_log_index.unwrap_or(0);
    let members: Vec<_> = facts
        .members
        .iter()
        .map(|member| {
            let lag = leads.then(|| last.saturating_sub(member.matched_index.unwrap_or(0)));
            json!({
                "id": member.id,
                "addr": member.addr,
                "raft_addr": member.raft_addr,
                "role": if member.voter { "voter" } else { "learner" },
                "matched_index": member.matched_index,
                "lag": lag,
            })
        })
        .collect();
    let applied = app.replica.state();
    Json(json!({
        "node_id": app.node_id,
        "cluster_id": app.identity.get().as_deref(),
        "state": facts.role,
        "leader_id": facts.leader_id,
        "term": facts.term,
        "commit_index": facts.commit_index,
        "last_log_index": facts.last_log_index,
        "last_applied_index": facts.last_applied_index,
        "snapshot_index": facts.snapshot_index,
        "purged_index": facts.purged_index,
        "last_command_index": applied.last_command_index,
        "cluster_time_ms": applied.cluster_time_ms,
        // The format the cluster runs (the previous one until every member speaks
        // this binary's, then the leader upgrades it) and the newest this node reads.
        "format": applied.active_format(),
        "binary_format": crate::codec::FORMAT_VERSION,
        "members": members,
        "test_switches": crate::config::TEST_SWITCHES_BUILT,
    }))
    .into_response()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    id: NodeId,
    addr: String,
    /// The node's peer listener; by default `addr`'s host with the port + 1000.
    raft_addr: Option<String>,
    #[serde(default = "default_true")]
    voter: bool,
    /// The node starts with empty storage (`conclave serve --join` says so): if
    /// its id is still a voter, it is removed and re-added as a learner first.
    #[serde(default)]
    fresh: bool,
}

fn default_true() -> bool {
    true
}

pub async fn add_member(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<AddMember>,
) -> Result<Response, ApiError> {
    if body.id == 0 {
        return Err(ApiError::invalid(
            ErrorCode::InvalidNodeId,
            "node ids start at 1",
        ));
    }
    let host_port = |addr: &str| {
        addr.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    if !host_port(&body.addr) {
        let message = "addr must be host:port";
        return Err(ApiError::invalid(ErrorCode::InvalidAddr, message));
    }
    let raft_addr = match body.raft_addr {
        Some(raft_addr) if host_port(&raft_addr) => raft_addr,
        Some(_) => {
            let message = "raft_addr must be host:port";
            return Err(ApiError::invalid(ErrorCode::InvalidAddr, message));
        }
        None => crate::config::raft_default(&body.addr)
            .map_err(|e| ApiError::invalid(ErrorCode::InvalidAddr, e.0))?,
    };
    if raft_addr == body.addr {
        let message = "raft_addr must differ from addr (peers and clients are kept apart)";
        return Err(ApiError::invalid(ErrorCode::InvalidAddr, message));
    }
    let member = crate::raft_types::Member {
        addr: body.addr,
        raft_addr,
    };
    let catch_up = Duration::from_millis(app.limits.learner_catch_up_ms);
    app.replica
        .add_member(body.id, member, body.voter, body.fresh, catch_up)
        .await
        .map_err(membership_error)?;
    Ok(info(State(app)).await)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// The voter to hand leadership to; by default the most caught-up other voter.
    to: Option<NodeId>,
}

/// `POST /v1/cluster/leader`: hands leadership to another voter (for draining a
/// node and rolling upgrades); see `Replica::transfer_leadership`.
pub async fn transfer_leader(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<TransferBody>,
) -> Result<Response, ApiError> {
    transfer(&app, body.to).await?;
    Ok(info(State(app)).await)
}

/// Hands this leader's leadership to `to` (or the most caught-up other voter).
pub async fn transfer(app: &AppState, to: Option<NodeId>) -> Result<NodeId, ApiError> {
    let call = app.peer_call.clone();
    app.replica
        .transfer_leadership(to, move |target, raft_addr, term| {
            call("/raft/campaign", target, raft_addr, term)
        })
        .await
        .map_err(membership_error)
}

/// `DELETE /v1/cluster/members/{id}`. Removing this node, the leader, hands
/// leadership to another voter first and then has the new leader remove it (the
/// same request, with the caller's token), so the cluster never waits out an
/// election for it. A removal that would leave fewer than `min_voters` voters is
/// refused (`409 below_min_voters`).
pub async fn remove_member(
    State(app): State<AppState>,
    PathParam(id): PathParam<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let id: NodeId = super::input::path_id(&id, ErrorCode::InvalidNodeId, "node")?;
    let facts = app.replica.raft_facts().await;
    let voters = facts.members.iter().filter(|m| m.voter).count();
    let removes_voter = facts.members.iter().any(|m| m.voter && m.id == id);
    if removes_voter && voters.saturating_sub(1) < app.min_voters {
        return Err(ApiError::conflict(
            ErrorCode::BelowMinVoters,
            format!(
                "removing voter {id} would leave {} voters, below min_voters ({})",
                voters - 1,
                app.min_voters
            ),
        ));
    }
    if id == app.node_id && voters > 1 && app.replica.is_leader() {
        let to = transfer(&app, None).await?;
        let addr = app.replica.member_addr(to).unwrap_or_default();
        let mut request = app
            .http
            .delete(format!("{}://{addr}/v1/cluster/members/{id}", app.scheme))
            .timeout(crate::limits::MEMBERSHIP_REQUEST_TIMEOUT);
        if let Some(authorization) = headers.get(axum::http::header::AUTHORIZATION) {
            request = request.header(axum::http::header::AUTHORIZATION, authorization);
        }
        let response = request.send().await.map_err(|e| {
            ApiError::Indeterminate(format!("removal sent to the new leader {to}: {e}"))
        })?;
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let body = response.bytes().await.unwrap_or_default();
        return Ok((
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response());
    }
    app.replica
        .remove_member(id)
        .await
        .map_err(membership_error)?;
    // Tell it (best effort), so it stops campaigning: a removed voter may have
    // missed the entry that removed it.
    if let Some(member) = facts.members.iter().find(|m| m.id == id) {
        let (call, raft_addr, term) = (app.peer_call.clone(), member.raft_addr.clone(), facts.term);
        tokio::spawn(async move {
            if let Err(error) = call("/raft/removed", id, raft_addr, term).await {
                tracing::info!(node = id, "could not tell the removed node: {error}");
            }
        });
    }
    Ok(info(State(app)).await)
}

/// `GET /v1/cluster/backup`: a consistent backup of the state on the leader, after
/// a read-index round (so it holds everything acknowledged before the request):
/// `store::backup`'s bytes, which `conclave snapshot save` writes to a file and
/// `conclave snapshot restore` seeds a new cluster from. Encoded under the read
/// lock, like `/v1/debug/state` (admin only; its cost is docs/security.md's).
pub async fn backup(State(app): State<AppState>) -> Result<Response, ApiError> {
    app.replica
        .read_barrier(crate::replica::Consistency::Linearizable)
        .await?;
    let bytes = app
        .replica
        .state()
        .backup()
        .map_err(|e| ApiError::Unavailable(format!("encoding the backup: {e}")))?;
    Ok(octets(bytes))
}

/// A binary body (a backup, a log export).
fn octets(bytes: Vec<u8>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response()
}

/// `GET /v1/cluster/log`: this node's latest snapshot and its log after it up to
/// its applied index (`store::backup::LogExport`), for `conclave log export` and
/// offline replay. Served locally.
pub async fn export_log(State(app): State<AppState>) -> Result<Response, ApiError> {
    let bytes = app.replica.export_log().map_err(ApiError::Unavailable)?;
    Ok(octets(bytes))
}

/// Builds a snapshot on this node now and waits until it covers what was applied.
pub async fn snapshot(State(app): State<AppState>) -> Result<Response, ApiError> {
    let snapshot_index = app
        .replica
        .snapshot_now()
        .await
        .map_err(ApiError::Unavailable)?;
    Ok(Json(json!({ "snapshot_index": snapshot_index })).into_response())
}

pub async fn health(State(app): State<AppState>) -> Response {
    Json(json!({ "status": "ok", "node_id": app.node_id })).into_response()
}

/// Ready when a leader is known and this node has applied everything committed.
pub async fn ready(State(app): State<AppState>) -> Response {
    let facts = app.replica.raft_facts().await;
    // A leader is only ready while a quorum has answered it recently.
    let ready = facts.leader_id.is_some()
        && facts.is_member(app.node_id)
        && !app.replica.is_removed()
        && facts.quorum_fresh
        && facts.last_applied_index >= facts.commit_index;
    let member = facts.is_member(app.node_id) && !app.replica.is_removed();
    let body = json!({
        "ready": ready,
        "member": member,
        "leader_id": facts.leader_id,
        "commit_index": facts.commit_index,
        "last_applied_index": facts.last_applied_index,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /v1/debug/state`: this replica's applied position and a hash of its whole
/// state-machine contents, so replicas can be compared (equal applied index must
/// mean equal hash). Served locally; costs one encoding of the state.
pub async fn state_digest(State(app): State<AppState>) -> Response {
    let applied = app.replica.state();
    let hash = match crate::codec::encode(&*applied) {
        Ok(bytes) => format!("{:016x}", crate::sm::requests::fnv1a(&bytes)),
        Err(e) => return ApiError::Unavailable(format!("encoding the state: {e}")).into_response(),
    };
    Json(json!({
        "node_id": app.node_id,
        "last_applied_index": applied.last_applied_index(),
        "last_command_index": applied.last_command_index,
        "cluster_time_ms": applied.cluster_time_ms,
        "state_hash": hash,
    }))
    .into_response()
}
