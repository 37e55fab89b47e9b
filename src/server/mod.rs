//! The client API: `/v1` and the operations endpoints (`/health`, `/ready`,
//! `/metrics`).
//!
//! Layout: `error` (the one error → status mapping), `error_code` (every stable
//! code), `input` (every input check), `extract` (request parsing), `forward` (the
//! one module that sends requests to the leader), `outcome` (replicated outcome →
//! response), `wait` (blocking waits), and the handlers `kv`, `requests`,
//! `sessions`, `tasks`, `locks`, `primitives`, `cluster`; `observe` (request ids,
//! spans, HTTP metrics: the outermost layer) and `metrics` (`/metrics`). Handlers never match on
//! leadership themselves: they return `ApiError::NoLeader` and `forward` decides.
//! Must not depend on `transport` (peer traffic) or storage internals.

pub mod admission;
pub mod cluster;
pub mod debug_clock;
#[cfg(test)]
mod decode_fuzz_tests;
pub mod error;
pub mod error_code;
pub mod extract;
pub mod forward;
pub mod input;
pub mod kv;
pub mod locks;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod outcome;
pub mod primitives;
pub mod proposals;
pub mod propose;
pub mod requests;
pub mod resource;
pub mod room_list;
pub mod routes;
pub mod sessions;
pub mod task_finish;
pub mod tasks;
pub mod twophase;
pub mod txn;
pub mod ui;
pub mod wait;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::Router;
use serde::Deserialize;

use crate::limits::Limits;
use crate::raft_types::NodeId;
pub use crate::replica::Consistency;
use crate::replica::Replica;
use crate::sm::{Applied, Submission};
use error::ApiError;
use error_code::ErrorCode;

/// Everything a handler may use. Built once by `node::start`.
pub struct App {
    pub node_id: NodeId,
    /// The replicated state and everything that reaches it (see `replica`).
    pub replica: Replica,
    pub limits: Limits,
    /// Pooled client for forwarding to the leader.
    pub http: reqwest::Client,
    /// Dial overrides for forwarding (`config::Config::forward_dial_addrs`).
    pub forward_dial_addrs: BTreeMap<NodeId, String>,
    /// How client requests are authenticated (`routes::gate`).
    pub auth: crate::auth::Auth,
    /// Which cluster this node belongs to (shown by `GET /v1/cluster`).
    pub identity: Arc<crate::store::ClusterIdentity>,
    /// What this node refuses at once rather than queue (`admission`).
    pub admission: admission::Admission,
    /// `http`, or `https` with `[tls]`: how other nodes' client APIs are dialed.
    pub scheme: &'static str,
    /// Sends a peer a leader's request over the peer listener (`/raft/campaign`:
    /// a transfer's last step; `/raft/removed`): the peer network's, passed in by
    /// `node` so this layer needs no `transport`.
    pub peer_call: PeerCall,
    /// A removal that would leave fewer voters is refused (`config::Config::min_voters`).
    pub min_voters: usize,
    /// This node's metrics (`crate::metrics`), fed by the handlers and `observe`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The request ids made here for requests that came without one (`observe`).
    pub request_ids: observe::RequestIds,
}

/// `(path, target, its peer address, this leader's term)` → whether it was done.
pub type PeerCall = Arc<
    dyn Fn(
            &'static str,
            NodeId,
            String,
            u64,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

pub type AppState = Arc<App>;

/// The query of a read endpoint: `?consistency=linearizable|stale`.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    #[serde(default)]
    #[param(inline)]
    pub consistency: Consistency,
}

impl App {
    /// Proposes `command` with the request's optional `request_id` and `guard`.
    pub async fn propose_command(
        &self,
        acting: &extract::Acting,
        request_id: Option<String>,
        guard: Option<input::GuardBody>,
        command: crate::sm::Command,
    ) -> Result<Applied, ApiError> {
        let guard = input::guard(guard)?;
        self.propose(Submission {
            request_id,
            guard,
            acting_as: acting.held_to(),
            command,
        })
        .await
    }

    /// The write path of a handler: propose, then answer with the outcome's response.
    pub async fn propose_and_respond(
        &self,
        acting: &extract::Acting,
        request_id: Option<String>,
        guard: Option<input::GuardBody>,
        command: crate::sm::Command,
    ) -> Result<axum::response::Response, ApiError> {
        let applied = self.propose_command(acting, request_id, guard, command);
        outcome::respond(&applied.await?)
    }

    /// Proposes one command through the batching proposer.
    pub async fn propose(&self, submission: Submission) -> Result<Applied, ApiError> {
        if let Some(request_id) = &submission.request_id {
            input::request_id(&self.limits, request_id)?;
        }
        Ok(self.replica.propose(submission).await?)
    }

    /// Waits until this node may serve a read at `consistency`.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), ApiError> {
        Ok(self.replica.read_barrier(consistency).await?)
    }

    /// The applied state after the read barrier of `consistency`.
    pub async fn read(
        &self,
        consistency: Consistency,
    ) -> Result<crate::replica::StateRef<'_>, ApiError> {
        self.read_barrier(consistency).await?;
        Ok(self.replica.state())
    }

    /// The read path of a handler for one item: waits until this node may serve a
    /// read at `consistency`, then answers the item's view, or 404 with `code`
    /// and the `missing` message when `view` finds nothing.
    pub async fn read_view(
        &self,
        consistency: Consistency,
        view: impl FnOnce(&crate::sm::State) -> Option<serde_json::Value>,
        code: error_code::ErrorCode,
        missing: impl FnOnce() -> String,
    ) -> Result<axum::response::Response, ApiError> {
        let found = view(&*self.read(consistency).await?);
        match found {
            Some(body) => Ok(axum::Json(body).into_response()),
            None => Err(ApiError::NotFound {
                code,
                message: missing(),
            }),
        }
    }

    /// The read path of an item that settles (a proposal or two-phase transaction
    /// being decided): `look` gives the item's view and whether it has settled.
    /// With `wait_ms`, an unsettled item is answered once it settles (re-checked
    /// after every apply, no polling) or the wait ends (then as it is); 404 with
    /// `code` and `missing` when there is none.
    pub async fn read_until_settled(
        &self,
        consistency: Consistency,
        wait_ms: u64,
        look: impl Fn(&crate::sm::State) -> Option<(bool, serde_json::Value)>,
        code: error_code::ErrorCode,
        missing: impl Fn() -> String,
    ) -> Result<axum::response::Response, ApiError> {
        let deadline = tokio::time::Instant::now() + input::wait(&self.limits, wait_ms)?;
        let not_found = || ApiError::NotFound {
            code,
            message: missing(),
        };
        let found = look(&*self.read(consistency).await?);
        let (settled, body) = found.ok_or_else(not_found)?;
        if settled || wait_ms == 0 {
            return Ok(axum::Json(body).into_response());
        }
        let settled = self
            .wait_for_state(deadline, |state| match look(state) {
                Some((false, _)) => None,
                Some((true, body)) => Some(Some(body)),
                None => Some(None),
            })
            .await;
        let body = match settled {
            Some(found) => found,
            None => look(&self.replica.state()).map(|(_, body)| body),
        };
        Ok(axum::Json(body.ok_or_else(not_found)?).into_response())
    }

    /// Waits until `check` finds what it looks for in the applied state (re-checked
    /// after every apply), or `deadline` passes.
    pub async fn wait_for_state<T>(
        &self,
        deadline: tokio::time::Instant,
        check: impl FnMut(&crate::sm::State) -> Option<T>,
    ) -> Option<T> {
        self.replica.wait_for_state(deadline, check).await
    }

    /// Whether `session_id` is live in this node's applied state.
    pub fn session_alive(&self, session_id: u64) -> bool {
        self.replica.state().sessions.get(session_id).is_some()
    }

    /// The leader this node currently believes in.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.replica.current_leader()
    }

    /// The address this node dials to forward a request to `node`'s client API
    /// (its membership address unless overridden by `forward_dial_addrs`).
    pub fn dial_addr(&self, node: NodeId) -> Option<String> {
        match self.forward_dial_addrs.get(&node) {
            Some(addr) => Some(addr.clone()),
            None => self.member_addr(node),
        }
    }

    /// `node`'s address in the replicated membership (what clients should use).
    pub fn member_addr(&self, node: NodeId) -> Option<String> {
        self.replica.member_addr(node)
    }
}

/// Builds the whole client router from the route table (`routes::table`): each
/// route behind its authorization gate, and a route served on the leader behind
/// the forwarding layer (the gate runs first, so a follower refuses a bad token
/// itself; the leader checks it again).
pub fn router(app: AppState) -> Router {
    let mut router = Router::new();
    for route in routes::table() {
        let mut handler = route.handler;
        match route.place {
            routes::Place::Leader => {
                handler = handler.route_layer(axum::middleware::from_fn_with_state(
                    app.clone(),
                    forward::serve_here_or_forward_to_leader,
                ));
            }
            routes::Place::FollowerRead => {
                handler = handler.route_layer(axum::middleware::from_fn_with_state(
                    app.clone(),
                    forward::read_here_or_forward_to_leader,
                ));
            }
            routes::Place::Local => {}
        }
        let gate = routes::Gate {
            app: app.clone(),
            access: route.access,
        };
        handler = handler.route_layer(axum::middleware::from_fn_with_state(gate, routes::gate));
        router = router.route(route.path, handler);
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            forward::leader_header,
        ))
        .layer(DefaultBodyLimit::max(app.limits.max_body_bytes))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Outermost: sees the matched route of every request, and every answer.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            observe::track,
        ))
        .with_state(app)
}

/// A handler that panics answers a logged JSON 500 `internal` instead of dropping
/// the connection (bug: a poisoned stored value made every list answer an empty
/// reply).
pub fn catch_panics<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        error::panic_response,
    ))
}

async fn not_found() -> ApiError {
    ApiError::NotFound {
        code: ErrorCode::NotFound,
        message: "no such endpoint".into(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// One page of a list: the first `limit` items of `matching` (already past the
/// request's cursor), and `next_after` — the `cursor` field of the last item —
/// when more remain.
pub fn list_page(
    mut matching: impl Iterator<Item = serde_json::Value>,
    limit: usize,
    cursor: &str,
) -> axum::response::Response {
    let items: Vec<serde_json::Value> = matching.by_ref().take(limit).collect();
    let next_after = match matching.next() {
        Some(_) => items.last().map(|item| item[cursor].clone()),
        None => None,
    };
    axum::Json(serde_json::json!({ "items": items, "next_after": next_after })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    #[tokio::test]
    async fn a_handler_panic_answers_a_json_500_and_keeps_serving() {
        async fn boom() -> &'static str {
            panic!("boom in a handler")
        }
        let router = catch_panics(
            Router::new()
                .route("/boom", get(boom))
                .route("/fine", get(|| async { "fine" })),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let http = reqwest::Client::new();
        let response = http
            .get(format!("http://{addr}/boom"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "internal", "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("boom in a handler"));
        let response = http
            .get(format!("http://{addr}/fine"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "fine");
    }
}
