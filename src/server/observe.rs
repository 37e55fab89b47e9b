//! The client API's outermost layer: every request gets a request id and a
//! tracing span, and is counted and timed by route template.
//!
//! - **Request id**: the caller's `X-Request-Id` if it sent a usable one (1 to 128
//!   visible ASCII bytes), else one made here (`<node id>-<start>-<n>`). It is on
//!   the request's span, passed on when the request is forwarded (so the leader's
//!   span carries the same id) and answered in `X-Request-Id`.
//! - **Span** `request{method, route, request_id, index}`: everything logged while
//!   handling the request carries it; `index` is recorded once a write has its
//!   command index (`record_index`, or the relayed `X-Conclave-Index`). At `debug`
//!   each request logs one `answered` line with its status and time.
//! - **Metrics**: `conclave_http_requests_total{method,route,status}`,
//!   `conclave_http_request_duration_seconds{method,route}` and, for what this node
//!   forwarded, `conclave_http_forwarded_total`. The route is axum's
//!   `MatchedPath` (the template, `/v1/kv/{*key}`), never the raw path, mapped to
//!   the route table's `&'static str`; an unknown path is `unmatched` and an
//!   unknown method `other`, so the label sets are bounded.
//!
//! Cost per request: a clock read, one id string, a span, and two labelled metric
//! updates without allocation. Must not depend on handlers, Raft or storage.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::forward::{Forwarded, INDEX_HEADER};
use super::AppState;
use crate::metrics::{RequestLabels, RouteLabels};

/// The request id header, read from callers, sent to the leader, answered.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The longest caller-chosen request id kept (as `request_id` in bodies).
const MAX_REQUEST_ID_BYTES: usize = 128;

/// Request ids made here: `<node id>-<process start, ms, hex>-<n>`.
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new(node_id: u64) -> RequestIds {
        // Wall time only tells this process's ids from a previous one's.
        let start_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        RequestIds {
            prefix: format!("{node_id}-{start_ms:x}-"),
            next: AtomicU64::new(1),
        }
    }

    fn make(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}{n}", self.prefix)
    }
}

/// The caller's request id if usable.
fn given(request: &Request) -> Option<HeaderValue> {
    let value = request.headers().get(REQUEST_ID_HEADER)?;
    let bytes = value.as_bytes();
    let usable = !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_BYTES
        && bytes.iter().all(|b| b.is_ascii_graphic());
    usable.then(|| value.clone())
}

/// The route table's templates, to label by `&'static str`.
fn templates() -> &'static HashSet<&'static str> {
    static TEMPLATES: OnceLock<HashSet<&'static str>> = OnceLock::new();
    TEMPLATES.get_or_init(|| super::routes::table().iter().map(|r| r.path).collect())
}

fn route_label(request: &Request) -> &'static str {
    let matched = request.extensions().get::<MatchedPath>();
    matched
        .and_then(|path| templates().get(path.as_str()).copied())
        .unwrap_or("unmatched")
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Records a write's command index on the current request's span.
pub fn record_index(index: u64) {
    tracing::Span::current().record("index", index);
}

/// See the module doc.
pub async fn track(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = route_label(&request);
    let request_id = match given(&request) {
        Some(id) => id,
        None => {
            let made = HeaderValue::from_str(&app.request_ids.make());
            let made = made.unwrap_or_else(|_| HeaderValue::from_static("unnamed"));
            request
                .headers_mut()
                .insert(REQUEST_ID_HEADER, made.clone());
            made
        }
    };
    let span = tracing::info_span!(
        "request",
        method,
        route,
        request_id = request_id.to_str().unwrap_or_default(),
        index = tracing::field::Empty,
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let http = &app.metrics.http;
    let labels = RequestLabels {
        method,
        route,
        status,
    };
    http.requests.get_or_create(&labels).inc();
    let labels = RouteLabels { method, route };
    http.duration_seconds
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    if response.extensions().get::<Forwarded>().is_some() {
        http.forwarded.inc();
    }
    let index = response.headers().get(INDEX_HEADER);
    if let Some(index) = index.and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        span.record("index", index);
    }
    span.in_scope(|| {
        let elapsed_ms = elapsed.as_millis() as u64;
        tracing::debug!(status, elapsed_ms, "answered");
    });
    response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_request_id_names_the_node_and_differs_each_time() {
        let ids = RequestIds::new(3);
        let (first, second) = (ids.make(), ids.make());
        assert!(first.starts_with("3-"), "{first}");
        assert_ne!(first, second);
    }

    #[test]
    fn only_a_short_visible_caller_request_id_is_kept() {
        let with = |value: &str| {
            Request::builder()
                .header(REQUEST_ID_HEADER, value)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert!(given(&with("abc-123")).is_some());
        assert!(given(&with("has space")).is_none());
        assert!(given(&with(&"x".repeat(129))).is_none());
    }

    #[test]
    fn every_route_template_is_a_label_and_unknown_methods_are_other() {
        assert!(templates().contains("/v1/kv/{*key}"));
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
