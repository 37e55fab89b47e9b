//! Cluster and operations endpoints: `/v1/cluster`, membership changes, snapshots,
//! `/health`, `/ready`, `/metrics`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::extract::{JsonBody, PathParam};
use super::AppState;
use crate::limits::{MEMBERSHIP_CHANGE_TIMEOUT, SNAPSHOT_WAIT};
use crate::raft_types::{Member, NodeId, TypeConfig};

fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

async fn commit_index(app: &AppState) -> Option<u64> {
    app.replica
        .raft()
        .with_raft_state(|state| state.committed.map(|log_id| log_id.index))
        .await
        .ok()
        .flatten()
}

pub async fn info(State(app): State<AppState>) -> Response {
    let commit_index = commit_index(&app).await;
    let metrics = app.replica.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let members: Vec<_> = membership
        .nodes()
        .map(|(id, member)| {
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(id).cloned())
                .flatten()
                .map(|log_id| log_id.index)
                .or(if *id == app.node_id {
                    metrics.last_log_index
                } else {
                    None
                });
            json!({
                "id": id,
                "addr": member.addr,
                "role": if voters.contains(id) { "voter" } else { "learner" },
                "matched_index": matched,
            })
        })
        .collect();
    let applied = app.replica.state();
    Json(json!({
        "node_id": app.node_id,
        "state": role_name(metrics.state),
        "leader_id": metrics.current_leader,
        "term": metrics.current_term,
        "commit_index": commit_index,
        "last_log_index": metrics.last_log_index,
        "last_applied_index": metrics.last_applied.map(|log_id| log_id.index),
        "snapshot_index": metrics.snapshot.map(|log_id| log_id.index),
        "purged_index": metrics.purged.map(|log_id| log_id.index),
        "last_command_index": applied.last_command_index,
        "cluster_time_ms": applied.cluster_time_ms,
        "members": members,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    id: NodeId,
    addr: String,
    #[serde(default = "default_true")]
    voter: bool,
}

fn default_true() -> bool {
    true
}

type WriteResult = Result<
    openraft::raft::ClientWriteResponse<TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, Member>>,
>;

/// Proposes a membership change and waits (within the timeout) until it is
/// committed.
async fn change_membership(
    app: &AppState,
    change: ChangeMembers<NodeId, Member>,
) -> Result<(), ApiError> {
    let change = app.replica.raft().change_membership(change, false);
    membership_error(tokio::time::timeout(MEMBERSHIP_CHANGE_TIMEOUT, change).await)
}

fn membership_error(
    result: Result<WriteResult, tokio::time::error::Elapsed>,
) -> Result<(), ApiError> {
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
            Err(ApiError::NoLeader {
                leader: forward.leader_id,
            })
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error)))) => {
            let code = match error {
                ChangeMembershipError::InProgress(_) => ErrorCode::MembershipChangeInProgress,
                ChangeMembershipError::EmptyMembership(_) => ErrorCode::EmptyMembership,
                ChangeMembershipError::LearnerNotFound(_) => ErrorCode::LearnerNotFound,
            };
            Err(ApiError::Conflict {
                code,
                message: error.to_string(),
            })
        }
        Ok(Err(RaftError::Fatal(fatal))) => Err(ApiError::Indeterminate(fatal.to_string())),
        Err(_) => Err(ApiError::Indeterminate(
            "membership change did not finish in time".into(),
        )),
    }
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
    if body.addr.parse::<std::net::SocketAddr>().is_err() && !body.addr.contains(':') {
        return Err(ApiError::invalid(
            ErrorCode::InvalidAddr,
            "addr must be host:port",
        ));
    }
    let member = Member { addr: body.addr };
    // Not openraft's blocking add: its catch-up check compares the lag with
    // `replication_lag_threshold`, which an unreachable node passes on a short log.
    let added = tokio::time::timeout(
        MEMBERSHIP_CHANGE_TIMEOUT,
        app.replica.raft().add_learner(body.id, member, false),
    )
    .await;
    let target = match &added {
        Ok(Ok(response)) => response.log_id.index,
        _ => 0,
    };
    membership_error(added)?;
    if body.voter {
        wait_for_learner(&app, body.id, target).await?;
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([body.id]));
        change_membership(&app, change).await?;
    }
    Ok(info(State(app)).await)
}

/// Waits until the leader has replicated to `id` up to `index` (the entry that added
/// it), so only a node that really follows the log is ever promoted.
async fn wait_for_learner(app: &AppState, id: NodeId, index: u64) -> Result<(), ApiError> {
    let timeout = Duration::from_millis(app.limits.learner_catch_up_ms);
    let caught_up = app
        .replica
        .raft()
        .wait(Some(timeout))
        .metrics(
            |metrics| {
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten());
                matched.is_some_and(|log_id| log_id.index >= index)
            },
            "learner caught up",
        )
        .await;
    caught_up.map(|_| ()).map_err(|_| ApiError::Conflict {
        code: ErrorCode::LearnerNotCaughtUp,
        message: format!(
            "node {id} was added as a learner but did not replicate the log within {timeout:?}; \
             it was not promoted (check its address and cluster_secret, then POST again or remove it)"
        ),
    })
}

pub async fn remove_member(
    State(app): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    let id: NodeId = super::input::path_id(&id, ErrorCode::InvalidNodeId, "node")?;
    let (is_voter, is_member) = {
        let metrics = app.replica.raft().metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        (
            membership.voter_ids().any(|voter| voter == id),
            membership.get_node(&id).is_some(),
        )
    };
    if !is_member {
        return Err(ApiError::NotFound {
            code: ErrorCode::MemberNotFound,
            message: format!("node {id} is not a member"),
        });
    }
    let change = if is_voter {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    change_membership(&app, change).await?;
    Ok(info(State(app)).await)
}

/// Builds a snapshot on this node now and waits until it covers what was applied.
pub async fn snapshot(State(app): State<AppState>) -> Result<Response, ApiError> {
    let applied = app.replica.raft().metrics().borrow().last_applied;
    app.replica
        .raft()
        .trigger()
        .snapshot()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let waited = app
        .replica
        .raft()
        .wait(Some(SNAPSHOT_WAIT))
        .metrics(|metrics| metrics.snapshot >= applied, "snapshot built")
        .await
        .map_err(|e| ApiError::Unavailable(format!("snapshot not built: {e}")))?;
    Ok(
        Json(json!({ "snapshot_index": waited.snapshot.map(|log_id| log_id.index) }))
            .into_response(),
    )
}

pub async fn health(State(app): State<AppState>) -> Response {
    Json(json!({ "status": "ok", "node_id": app.node_id })).into_response()
}

/// Ready when a leader is known and this node has applied everything committed.
pub async fn ready(State(app): State<AppState>) -> Response {
    let commit_index = commit_index(&app).await;
    let metrics = app.replica.raft().metrics().borrow().clone();
    let applied_index = metrics.last_applied.map(|log_id| log_id.index);
    let membership = metrics.membership_config.membership();
    let is_member = membership.get_node(&app.node_id).is_some();
    let lone_voter = membership.voter_ids().eq([app.node_id]);
    // A leader is only ready while a quorum has answered it recently.
    let leader_has_quorum = metrics.state != ServerState::Leader
        || lone_voter
        || metrics
            .millis_since_quorum_ack
            .is_some_and(|ms| ms <= app.replica.raft().config().election_timeout_max);
    let ready = metrics.current_leader.is_some()
        && is_member
        && leader_has_quorum
        && applied_index >= commit_index;
    let body = json!({
        "ready": ready,
        "leader_id": metrics.current_leader,
        "commit_index": commit_index,
        "last_applied_index": applied_index,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition.
pub async fn metrics(State(app): State<AppState>) -> Response {
    let metrics = app.replica.raft().metrics().borrow().clone();
    let (keys, requests, commands) = {
        let applied = app.replica.state();
        (
            applied.kv.len(),
            applied.requests.len(),
            applied.last_command_index,
        )
    };
    let gauges: [(&str, &str, u64); 11] = [
        ("conclave_node_id", "This node's Raft id.", app.node_id),
        (
            "conclave_raft_term",
            "Current Raft term.",
            metrics.current_term,
        ),
        (
            "conclave_raft_is_leader",
            "1 if this node is the leader.",
            u64::from(metrics.state == ServerState::Leader),
        ),
        (
            "conclave_raft_last_log_index",
            "Last Raft log index.",
            metrics.last_log_index.unwrap_or(0),
        ),
        (
            "conclave_raft_applied_index",
            "Last applied Raft log index.",
            metrics.last_applied.map_or(0, |l| l.index),
        ),
        (
            "conclave_raft_snapshot_index",
            "Raft log index of the last snapshot.",
            metrics.snapshot.map_or(0, |l| l.index),
        ),
        (
            "conclave_state_command_index",
            "Last applied command index.",
            commands,
        ),
        (
            "conclave_state_kv_keys",
            "Keys in the KV store.",
            keys as u64,
        ),
        (
            "conclave_state_request_ids",
            "Remembered request ids.",
            requests as u64,
        ),
        (
            "conclave_proposer_batches_total",
            "Batches (Raft entries) proposed by this node.",
            app.replica.proposer_stats().batches.load(Ordering::Relaxed),
        ),
        (
            "conclave_proposer_commands_total",
            "Commands proposed by this node.",
            app.replica
                .proposer_stats()
                .commands
                .load(Ordering::Relaxed),
        ),
    ];
    let mut text = String::new();
    for (name, help, value) in gauges {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    }
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
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
