//! The HTTP front: the client API under `/v1`, operations endpoints, and `/raft/*`.
//!
//! Layout: `error` (the one error → status mapping), `extract` (input parsing),
//! `forward` (the one module that sends requests to the leader), `raft_rpc`
//! (node-to-node), `kv`, `requests`, `cluster` (handlers). Handlers never match on
//! leadership themselves: they return `ApiError::NoLeader` and `forward` decides.

pub mod cluster;
pub mod debug_clock;
pub mod error;
pub mod extract;
pub mod forward;
pub mod kv;
pub mod locks;
pub mod outcome;
pub mod primitives;
pub mod raft_rpc;
pub mod requests;
pub mod sessions;
pub mod tasks;
pub mod wait;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::limits::Limits;
use crate::proposer::Proposer;
use crate::raft_types::{NodeId, Raft};
use crate::read_index::ReadIndex;
use crate::sm::{Applied, Proposal};
use crate::store::StateMachineStore;
use error::ApiError;

/// Everything a handler may use. Built once by `node::start`.
pub struct App {
    pub node_id: NodeId,
    pub raft: Raft,
    pub state_machine: StateMachineStore,
    pub proposer: Proposer,
    pub reads: ReadIndex,
    pub limits: Limits,
    /// Pooled client for forwarding to the leader.
    pub http: reqwest::Client,
    pub cluster_secret: String,
    pub peer_dial_addrs: BTreeMap<NodeId, String>,
    /// Largest `/raft/*` body accepted.
    pub max_raft_body_bytes: usize,
    /// Keepalives accepted here while leading, replicated by the ticker.
    pub keepalives: crate::ticker::Keepalives,
    /// Test-only planted bug: linearizable reads served locally (see `config`).
    pub stale_reads_bug: bool,
}

pub type AppState = Arc<App>;

/// The query of a read endpoint: `?consistency=linearizable|stale`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct ReadQuery {
    #[serde(default)]
    pub consistency: Consistency,
}

/// `?consistency=` on reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    #[default]
    Linearizable,
    Stale,
}

impl App {
    /// Proposes one command through the batching proposer.
    pub async fn propose(&self, proposal: Proposal) -> Result<Applied, ApiError> {
        if let Some(request_id) = &proposal.request_id {
            self.check_request_id(request_id)?;
        }
        Ok(self.proposer.propose(proposal).await?)
    }

    /// Waits until this node may serve a read at `consistency`.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), ApiError> {
        match consistency {
            Consistency::Stale => Ok(()),
            Consistency::Linearizable if self.stale_reads_bug => Ok(()),
            Consistency::Linearizable => Ok(self.reads.wait().await?),
        }
    }

    pub fn check_request_id(&self, request_id: &str) -> Result<(), ApiError> {
        if request_id.is_empty() || request_id.len() > self.limits.max_request_id_bytes {
            return Err(ApiError::invalid(
                "invalid_request_id",
                format!(
                    "request_id must be 1 to {} bytes",
                    self.limits.max_request_id_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Waits until `check` finds what it looks for in the applied state (re-checked
    /// after every apply), or `deadline` passes.
    pub async fn wait_for_state<T>(
        &self,
        deadline: tokio::time::Instant,
        mut check: impl FnMut(&crate::sm::State) -> Option<T>,
    ) -> Option<T> {
        let mut applied = self.state_machine.subscribe_applied();
        loop {
            if let Some(found) = check(&self.state_machine.read().state) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Checks the name of a lock, semaphore, barrier or election.
    pub fn check_resource_name(&self, name: &str) -> Result<(), ApiError> {
        if name.is_empty() || name.len() > self.limits.max_key_bytes {
            return Err(ApiError::invalid(
                "invalid_name",
                format!("names are 1 to {} bytes", self.limits.max_key_bytes),
            ));
        }
        Ok(())
    }

    /// Whether `session_id` is live in this node's applied state.
    pub fn session_alive(&self, session_id: u64) -> bool {
        self.state_machine
            .read()
            .state
            .sessions
            .get(session_id)
            .is_some()
    }

    /// Checks a requested `wait_ms` against the limit.
    pub fn check_wait(&self, wait_ms: u64) -> Result<std::time::Duration, ApiError> {
        if wait_ms > self.limits.max_wait_ms {
            return Err(ApiError::invalid(
                "invalid_wait",
                format!("wait_ms is at most {}", self.limits.max_wait_ms),
            ));
        }
        Ok(std::time::Duration::from_millis(wait_ms))
    }

    /// The leader this node currently believes in.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The address this node dials to reach `node` (membership address unless
    /// overridden by `peer_dial_addrs`).
    pub fn dial_addr(&self, node: NodeId) -> Option<String> {
        match self.peer_dial_addrs.get(&node) {
            Some(addr) => Some(addr.clone()),
            None => self.member_addr(node),
        }
    }

    /// `node`'s address in the replicated membership (what clients should use).
    pub fn member_addr(&self, node: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&node)
            .map(|member| member.addr.clone())
    }
}

/// Builds the whole router.
pub fn router(app: AppState) -> Router {
    let leader_routes = Router::new()
        .route("/v1/kv", get(kv::list))
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/v1/requests/{request_id}", get(requests::get))
        .route("/v1/sessions", get(sessions::list).post(sessions::create))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get).delete(sessions::end),
        )
        .route("/v1/sessions/{id}/keepalive", post(sessions::keepalive))
        .route("/v1/tasks", get(tasks::list).post(tasks::submit))
        .route("/v1/tasks/claim", post(tasks::claim))
        .route("/v1/tasks/{id}", get(tasks::get).delete(tasks::cancel))
        .route("/v1/tasks/{id}/heartbeat", post(tasks::heartbeat))
        .route("/v1/tasks/{id}/complete", post(tasks::complete))
        .route("/v1/tasks/{id}/fail", post(tasks::fail))
        .route("/v1/tasks/{id}/retry", post(tasks::retry))
        .route("/v1/locks/{name}", get(locks::get))
        .route("/v1/locks/{name}/acquire", post(locks::acquire))
        .route("/v1/locks/{name}/release", post(locks::release))
        .route("/v1/semaphores/{name}", get(primitives::semaphore_get))
        .route(
            "/v1/semaphores/{name}/acquire",
            post(primitives::semaphore_acquire),
        )
        .route(
            "/v1/semaphores/{name}/release",
            post(primitives::semaphore_release),
        )
        .route("/v1/barriers/{name}", get(primitives::barrier_get))
        .route("/v1/barriers/{name}/wait", post(primitives::barrier_wait))
        .route("/v1/elections/{name}", get(primitives::election_get))
        .route("/v1/elections/{name}/campaign", post(primitives::campaign))
        .route("/v1/elections/{name}/resign", post(primitives::resign))
        .route("/v1/cluster/members", post(cluster::add_member))
        .route(
            "/v1/cluster/members/{id}",
            axum::routing::delete(cluster::remove_member),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            forward::leader_only,
        ));
    let local_routes = Router::new()
        .route("/v1/cluster", get(cluster::info))
        .route("/v1/debug/state", get(cluster::state_digest))
        .route(
            "/v1/debug/clock",
            get(debug_clock::get).post(debug_clock::set),
        )
        .route("/v1/cluster/snapshot", post(cluster::snapshot))
        .route("/health", get(cluster::health))
        .route("/ready", get(cluster::ready))
        .route("/metrics", get(cluster::metrics));
    let raft_routes = Router::new()
        .route("/raft/append", post(raft_rpc::append))
        .route("/raft/vote", post(raft_rpc::vote))
        .route("/raft/snapshot", post(raft_rpc::snapshot))
        .layer(DefaultBodyLimit::max(app.max_raft_body_bytes));
    let client_routes = leader_routes
        .merge(local_routes)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            forward::leader_header,
        ))
        .layer(DefaultBodyLimit::max(app.limits.max_body_bytes));
    client_routes
        .merge(raft_routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "not_found",
        message: "no such endpoint".into(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
