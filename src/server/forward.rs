//! Leader forwarding: the only module that decides where a request is served.
//!
//! Writes and linearizable reads must be served by the leader. [`serve_here_or_forward_to_leader`]
//! serves them locally when this node believes it leads; otherwise it forwards the
//! request to the leader itself (one hop: a forwarded request carries
//! `X-Conclave-Forwarded` and is never forwarded again), or answers `307` with the
//! leader's URL when the client asked `?redirect=true`. If a local attempt finds this
//! node is no longer the leader (the handler answered `no_leader`, meaning nothing was
//! done), the request is forwarded once to the new leader. `?consistency=stale`
//! reads are always served locally. Forwarding has a bounded deadline: a connection
//! that never opened is 503 (not applied); a write lost after sending is 504.
//!
//! Routes placed `FollowerRead` (the KV reads) are served where they arrive, leader
//! or follower ([`read_here_or_forward_to_leader`]): a follower's read barrier asks
//! the leader for its read index and waits for its own apply (`replica::read_index`),
//! so the read stays linearizable without the leader parsing, serving or answering
//! it. Only when that finds no leader to ask (`no_leader`, nothing read) is the read
//! forwarded as above, once; `?redirect=true` redirects as for any leader route.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::error::{ApiError, NotLeaderMarker};
use super::AppState;
use crate::raft_types::NodeId;

/// Set on a request one node forwarded to another.
pub const FORWARDED_HEADER: &str = "x-conclave-forwarded";
/// The leader this node believes in, on every `/v1` response.
pub const LEADER_HEADER: &str = "x-conclave-leader";
/// The command index of a write, on write responses.
pub const INDEX_HEADER: &str = "x-conclave-index";

/// On a response this node got by forwarding the request to the leader (for the
/// `conclave_http_forwarded_total` count in `observe`).
#[derive(Clone, Copy, Debug)]
pub struct Forwarded;

/// Response headers copied back from the leader.
const RELAYED_HEADERS: [&str; 5] = [
    "content-type",
    LEADER_HEADER,
    INDEX_HEADER,
    "retry-after",
    "location",
];

struct Routing {
    stale_read: bool,
    redirect: bool,
}

fn routing_of(method: &Method, uri: &Uri) -> Routing {
    let mut routing = Routing {
        stale_read: false,
        redirect: false,
    };
    for pair in uri.query().unwrap_or_default().split('&') {
        match pair {
            "consistency=stale" => routing.stale_read = *method == Method::GET,
            "redirect=true" => routing.redirect = true,
            _ => {}
        }
    }
    routing
}

/// Adds `X-Conclave-Leader` to every client API response that lacks it.
pub async fn leader_header(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if !response.headers().contains_key(LEADER_HEADER) {
        if let Some(leader) = app.current_leader() {
            response
                .headers_mut()
                .insert(LEADER_HEADER, HeaderValue::from(leader));
        }
    }
    response
}

/// Serves a request here if this node leads, else forwards or redirects it.
pub async fn serve_here_or_forward_to_leader(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    here_or_leader(app, request, next, false).await
}

/// Serves a linearizable read here, leader or follower (see the module doc); forwards
/// it as [`serve_here_or_forward_to_leader`] does when no leader could be asked.
pub async fn read_here_or_forward_to_leader(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    here_or_leader(app, request, next, true).await
}

async fn here_or_leader(
    app: AppState,
    request: Request,
    next: Next,
    follower_read: bool,
) -> Response {
    let routing = routing_of(request.method(), request.uri());
    let planted_bug = app.replica.stale_reads_bug() && request.method() == Method::GET;
    if routing.stale_read || planted_bug {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let body = match super::extract::read_body(body, app.limits.max_body_bytes).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let (method, uri, headers) = (
        parts.method.clone(),
        parts.uri.clone(),
        parts.headers.clone(),
    );
    let forwarded = headers.contains_key(FORWARDED_HEADER);
    let mut leader = app.current_leader();
    if leader.is_none() && !forwarded {
        leader = wait_for_leader(&app).await;
    }
    let read_here = follower_read && !routing.redirect && leader.is_some();
    if forwarded || read_here || leader == Some(app.node_id) {
        let response = next
            .run(Request::from_parts(parts, Body::from(body.clone())))
            .await;
        if forwarded || response.extensions().get::<NotLeaderMarker>().is_none() {
            return response;
        }
        // Nothing was done here; try the leader we now know of, if it is another node.
        leader = app.current_leader().filter(|&id| id != app.node_id);
    }
    let Some(leader) = leader else {
        return ApiError::NoLeader { leader: None }.into_response();
    };
    if routing.redirect {
        return match app.member_addr(leader) {
            Some(addr) => redirect(app.scheme, &addr, &uri, leader),
            None => ApiError::NoLeader {
                leader: Some(leader),
            }
            .into_response(),
        };
    }
    let Some(addr) = app.dial_addr(leader) else {
        return ApiError::NoLeader {
            leader: Some(leader),
        }
        .into_response();
    };
    let mut response = forward(&app, leader, &addr, method, &uri, &headers, body).await;
    response.extensions_mut().insert(Forwarded);
    response
}

/// Waits (at most `leader_wait_ms`) for an election to produce a leader.
async fn wait_for_leader(app: &AppState) -> Option<NodeId> {
    let wait = std::time::Duration::from_millis(app.limits.leader_wait_ms);
    app.replica.wait_for_leader(wait).await
}

/// How long the leader may take: `forward_timeout_ms`, plus the request's own
/// blocking wait (`wait_ms`, capped) if it asks for one; membership changes may wait
/// for a learner to catch up.
fn forward_deadline(app: &AppState, uri: &Uri, body: &[u8]) -> std::time::Duration {
    #[derive(serde::Deserialize)]
    struct WaitHint {
        wait_ms: Option<u64>,
    }
    let normal = std::time::Duration::from_millis(app.limits.forward_timeout_ms);
    if uri.path().starts_with("/v1/cluster/members") {
        return normal.max(crate::limits::MEMBERSHIP_REQUEST_TIMEOUT);
    }
    let wait_ms = serde_json::from_slice::<WaitHint>(body)
        .ok()
        .and_then(|hint| hint.wait_ms)
        .unwrap_or(0);
    normal + std::time::Duration::from_millis(wait_ms.min(app.limits.max_wait_ms))
}

fn redirect(scheme: &str, addr: &str, uri: &Uri, leader: NodeId) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{scheme}://{addr}{path}");
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert("location", value);
    }
    response
        .headers_mut()
        .insert(LEADER_HEADER, HeaderValue::from(leader));
    response
}

async fn forward(
    app: &AppState,
    leader: NodeId,
    addr: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let is_write = method != Method::GET;
    // Held until the leader's answer is relayed (or lost); none free: 429, not sent.
    let _place = match app.admission.forward_permit() {
        Ok(place) => place,
        Err(refused) => return refused.into_response(),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    // On the request's span (`observe`): its request id goes along, below.
    tracing::debug!(leader, %addr, "forwarding to the leader");
    let mut request = app
        .http
        .request(method, format!("{}://{addr}{path}", app.scheme))
        .header(FORWARDED_HEADER, app.node_id.to_string())
        .timeout(forward_deadline(app, uri, &body))
        .body(body);
    // The caller's token goes along: the leader authorizes the request again. So
    // does the request id, for following the request across nodes.
    for name in [
        "content-type",
        "authorization",
        super::observe::REQUEST_ID_HEADER,
    ] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let lost = |e: reqwest::Error| -> Response {
        let message = format!("forwarding to leader {leader} at {addr}: {e}");
        if e.is_connect() || !is_write {
            ApiError::Unavailable(message).into_response()
        } else {
            ApiError::Indeterminate(message).into_response()
        }
    };
    let upstream = match request.send().await {
        Ok(upstream) => upstream,
        Err(e) => return lost(e),
    };
    let status = upstream.status();
    let mut relayed = HeaderMap::new();
    for name in RELAYED_HEADERS {
        if let Some(value) = upstream.headers().get(name) {
            relayed.insert(HeaderName::from_static(name), value.clone());
        }
    }
    match upstream.bytes().await {
        Ok(bytes) => (status, relayed, bytes).into_response(),
        Err(e) => lost(e),
    }
}
