//! `conclave-client`: a typed HTTP client for Conclave's API as implemented today
//! (`docs/api.md`): key/value, request lookup, sessions, tasks, locks, semaphores,
//! barriers, elections (and their lists), proposals, `/v1/txn`, two-phase commit,
//! cluster operations, `/health`, `/ready`, `/v1/debug/state`, `/metrics`, watch;
//! and the helpers agents build on them (`docs/client.md`).
//!
//! It speaks only HTTP + JSON and must not depend on the server crate (`conclave`)
//! or any of its types, so agents and tools can use it without linking the server.
//! Integration tests use it instead of hand-written request helpers.
//!
//! # Layout
//!
//! - `lib.rs`: [`Client`] (endpoints + a shared `reqwest::Client` + retry policy),
//!   path building (every path segment percent-encoded, so a key may contain `/`),
//!   the read/write plumbing every endpoint method uses, [`Consistency`].
//! - `builder.rs`: [`ClientBuilder`] (endpoints, token, timeouts, backoff).
//! - `call.rs`: one logical call: retry rules, deadline, backoff, leader hints,
//!   generated `request_id`s. `endpoints.rs`: the endpoint list and leader map.
//! - `error.rs`: [`Error`] and [`ApiError`] (status, stable `code`, `message`).
//! - `kv.rs`, `sessions.rs`, `tasks.rs`, `primitives.rs` (locks, semaphores,
//!   barriers, elections, their lists), `proposals.rs`, `twophase.rs`, `txn.rs`,
//!   `cluster.rs` (cluster, requests, health, ready, debug state, metrics): one
//!   `impl Client` block per API area, with its request and response types.
//! - Helpers for agents, built on those methods only: `session.rs` ([`Session`]:
//!   background keepalive, local lease deadline, Live/Jeopardy/Expired), `lock.rs`
//!   ([`LockGuard`]: fencing token, release on drop, `lost()`), `worker.rs` (the
//!   claim/heartbeat/complete loop), `watch.rs` + `sse.rs` ([`Watch`]: a resuming
//!   `Stream` of events).
//!
//! Responses are typed structs where the shape is small and stable, and
//! `serde_json::Value` for the large views (a task, a session, the cluster).

mod builder;
mod call;
mod cluster;
mod endpoints;
mod error;
mod kv;
mod lock;
mod primitives;
mod proposals;
mod session;
mod sessions;
mod sse;
mod tasks;
mod twophase;
mod txn;
mod watch;
mod worker;

pub use builder::ClientBuilder;
pub use cluster::{DebugState, Health, MemberAdd, Ready, Snapshot};
pub use error::{ApiError, Error};
pub use kv::{Deleted, KvDelete, KvList, KvPut, Written};
pub use lock::{LockGuard, LockLoss, LockOptions};
pub use primitives::{
    Acquired, BarrierWait, BarrierWaited, Campaign, Campaigned, LockAcquire, LockMode, Release,
    Released, Resign, RoomList, SemaphoreAcquire,
};
pub use proposals::{
    Party, ProposalCreate, ProposalCreated, ProposalList, ProposalVoted, Rule, Tally, Vote,
};
pub use serde_json::Value;
pub use session::{Session, SessionOptions, SessionState};
pub use sessions::{Keepalive, SessionCreate, SessionCreated, SessionEnded, SessionList};
pub use tasks::{
    Claimed, Finished, Heartbeat, HeartbeatSent, TaskComplete, TaskFail, TaskList, TaskSubmit,
    TaskSubmitted, TaskWritten,
};
pub use twophase::{TwoPhaseAcked, TwoPhaseCreate, TwoPhaseList, TwoPhaseVote, TwoPhaseWritten};
pub use txn::{Txn, TxnCompare, TxnOp, TxnResult};
pub use watch::{Event, Watch, WatchOptions, WatchStart};
pub use worker::{TaskContext, TaskFailure, WorkerOptions, WorkerReport};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use builder::Policy;
use call::{Answer, Call, Retry};
use endpoints::Endpoints;

/// Which replica answers a read (`?consistency=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    /// The leader, after a read-index round (the default).
    #[default]
    Linearizable,
    /// The receiving node's applied state, no Raft contact; may lag.
    Stale,
}

impl Consistency {
    fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Stale => "stale",
        }
    }
}

/// A client of a Conclave cluster. [`Client::new`] and [`Client::with_http`] make
/// a client of one node that sends each call once, as it always did;
/// [`Client::builder`] makes one over a list of endpoints that follows the leader
/// and retries what the API says is safe (`docs/client.md`). Cloning is cheap and
/// shares the endpoints, the pool and the learned leader.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    /// The first endpoint: [`Client::base_url`], and where node-local calls go.
    base: Url,
    endpoints: Endpoints,
    /// `Bearer <token>`, sent on every request when set.
    token: Option<String>,
    policy: Policy,
    retries: AtomicU64,
}

impl std::fmt::Debug for Inner {
    /// Everything but the token, which must not reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("endpoints", &self.endpoints)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("policy", &self.policy)
            .finish()
    }
}

impl Client {
    /// A client of the node at `base_url` (`http://127.0.0.1:7000`) with its own
    /// connection pool.
    pub fn new(base_url: &str) -> Result<Client, Error> {
        Client::with_http(base_url, reqwest::Client::new())
    }

    /// A client of the node at `base_url` sharing `http`'s pool and timeouts. It
    /// sends each call once (no retries, no generated `request_id`).
    pub fn with_http(base_url: &str, http: reqwest::Client) -> Result<Client, Error> {
        let base = parse_base(base_url)?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base: base.clone(),
                endpoints: Endpoints::new(vec![base]),
                token: None,
                policy: Policy::single(),
                retries: AtomicU64::new(0),
            }),
        })
    }

    /// A builder of a client over several endpoints, with retries.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The first endpoint's base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// Every endpoint the client knows: those it was given, then members it learned.
    pub fn endpoints(&self) -> Vec<Url> {
        self.inner.endpoints.all()
    }

    /// The endpoint the next call goes to first (the leader's, once a hint named it).
    pub fn current_endpoint(&self) -> Url {
        self.inner.endpoints.pick().1
    }

    /// How many attempts this client (and its clones) repeated so far.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    /// The shared `reqwest::Client`, for requests this crate has no method for.
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The URL of `segments` under the base URL, each segment percent-encoded (a `/`
    /// inside a segment becomes `%2F`; the server decodes it back). A segment `.` or
    /// `..` cannot be sent: URLs normalize it away even percent-encoded (WHATWG), so
    /// `/v1/kv/..` would address `/v1`; it is `Error::UnsendableSegment`.
    pub fn url(&self, segments: &[&str]) -> Result<Url, Error> {
        url_under(&self.inner.base, segments)
    }

    /// `GET segments?consistency=...` read as `T`.
    pub(crate) async fn read<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        consistency: Consistency,
    ) -> Result<T, Error> {
        self.read_query(segments, &[], consistency).await
    }

    /// `GET segments?query&consistency=...` read as `T`.
    pub(crate) async fn read_query<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        consistency: Consistency,
    ) -> Result<T, Error> {
        let mut query = query.to_vec();
        if consistency != Consistency::default() {
            query.push(("consistency", consistency.as_str().to_owned()));
        }
        let call = Call::new(Method::GET, segments, Retry::Repeatable).query(query);
        self.execute(call).await?.decode()
    }

    /// `method segments` with a JSON body that takes no `request_id`, read as `T`:
    /// retried only when surely not applied.
    pub(crate) async fn write<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
    ) -> Result<T, Error> {
        let call = Call::new(method, segments, Retry::Once).body(to_value(body)?);
        self.execute(call).await?.decode()
    }

    /// `method segments` with a JSON body that accepts a `request_id` (given, or
    /// generated here and reused by every retry), read as `T`.
    pub(crate) async fn write_idempotent<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
    ) -> Result<T, Error> {
        self.write_with_id(method, segments, body, None).await
    }

    /// Like [`Client::write_idempotent`] for a write whose repeat is idempotent by
    /// nature (a vote cast again answers the current state): retried like a read
    /// even when it carries no `request_id`.
    pub(crate) async fn write_repeatable<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
    ) -> Result<T, Error> {
        let retry = Some(Retry::Repeatable);
        self.write_with_id(method, segments, body, retry).await
    }

    /// A write with a `request_id` (given or generated), retried as `retry` says, or
    /// as its `request_id` allows when `None`.
    async fn write_with_id<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
        retry: Option<Retry>,
    ) -> Result<T, Error> {
        let (body, with_id) = self.with_request_id(to_value(body)?);
        let call = Call::new(method, segments, retry.unwrap_or(with_id)).body(body);
        self.execute(call).await?.decode()
    }

    /// `method segments` with no body.
    pub(crate) async fn send_empty(
        &self,
        method: Method,
        segments: &[&str],
        retry: Retry,
    ) -> Result<Answer, Error> {
        self.execute(Call::new(method, segments, retry)).await
    }
}

pub(crate) fn to_value<B: Serialize + ?Sized>(body: &B) -> Result<Value, Error> {
    serde_json::to_value(body).map_err(|error| Error::Unexpected {
        status: 0,
        body: format!("request body: {error}"),
    })
}

/// `base_url` as a client base: an absolute `http(s)://` URL that can have paths.
pub(crate) fn parse_base(base_url: &str) -> Result<Url, Error> {
    let invalid = || Error::InvalidBaseUrl(base_url.to_owned());
    let base = Url::parse(base_url).map_err(|_| invalid())?;
    if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
        return Err(invalid());
    }
    Ok(base)
}

/// The URL of `segments` under `base` (see [`Client::url`]).
pub(crate) fn url_under(base: &Url, segments: &[&str]) -> Result<Url, Error> {
    if let Some(segment) = segments.iter().find(|s| **s == "." || **s == "..") {
        return Err(Error::UnsendableSegment((*segment).to_owned()));
    }
    let mut path = base.path().trim_end_matches('/').to_owned();
    for segment in segments {
        path.push('/');
        path.push_str(&encode_segment(segment));
    }
    let mut url = base.clone();
    url.set_path(&path);
    Ok(url)
}

/// Sends `request`; a 2xx body is read as `T`, anything else as an [`Error`].
pub async fn receive<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, Error> {
    match receive_optional(request).await? {
        Some(value) => Ok(value),
        None => Err(Error::Unexpected {
            status: StatusCode::NO_CONTENT.as_u16(),
            body: String::new(),
        }),
    }
}

/// Like [`receive`], but a `204 No Content` is `None`.
pub(crate) async fn receive_optional<T: DeserializeOwned>(
    request: RequestBuilder,
) -> Result<Option<T>, Error> {
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if status == StatusCode::NO_CONTENT {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(error::from_error_body(status.as_u16(), &body));
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|_| Error::Unexpected {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
}

/// Everything but RFC 3986's unreserved characters is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One path segment, percent-encoded.
fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// Query pairs for the fields that are set.
pub(crate) fn query_pairs(pairs: &[(&'static str, Option<String>)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .filter_map(|(name, value)| value.clone().map(|value| (*name, value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        Client::new(base).unwrap()
    }

    #[test]
    fn a_key_with_slashes_is_one_encoded_segment() {
        let url = client("http://127.0.0.1:7000")
            .url(&["v1", "kv", "jobs/42/state"])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:7000/v1/kv/jobs%2F42%2Fstate"
        );
    }

    #[test]
    fn segments_are_percent_encoded() {
        let url = client("http://h:1")
            .url(&["v1", "locks", "a b?c#d%e"])
            .unwrap();
        assert_eq!(url.as_str(), "http://h:1/v1/locks/a%20b%3Fc%23d%25e");
        let url = client("http://h:1")
            .url(&["v1", "kv", "é", "a..b", ".x"])
            .unwrap();
        assert_eq!(url.path(), "/v1/kv/%C3%A9/a..b/.x");
    }

    #[test]
    fn a_dot_segment_is_refused_not_normalized_away() {
        for key in [".", ".."] {
            match client("http://h:1").url(&["v1", "kv", key]) {
                Err(Error::UnsendableSegment(segment)) => assert_eq!(segment, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_base_with_a_path_or_trailing_slash_keeps_its_prefix() {
        assert_eq!(
            client("http://h:1/").url(&["health"]).unwrap().as_str(),
            "http://h:1/health"
        );
        assert_eq!(
            client("http://h:1/conclave/")
                .url(&["v1", "kv"])
                .unwrap()
                .as_str(),
            "http://h:1/conclave/v1/kv"
        );
    }

    #[test]
    fn a_base_that_is_not_http_is_refused() {
        for base in ["127.0.0.1:7000", "mailto:x@y", "ftp://h/", ""] {
            assert!(
                matches!(Client::new(base), Err(Error::InvalidBaseUrl(_))),
                "{base}"
            );
        }
    }

    #[test]
    fn the_token_is_not_in_the_debug_output() {
        let client = Client::builder()
            .endpoint("http://h:1")
            .token("very-secret")
            .build()
            .unwrap();
        let text = format!("{client:?}");
        assert!(
            !text.contains("very-secret") && text.contains("<redacted>"),
            "{text}"
        );
    }

    #[test]
    fn only_set_query_fields_are_sent() {
        let pairs = query_pairs(&[
            ("prefix", Some("a/".into())),
            ("after", None),
            ("limit", Some("5".into())),
        ]);
        assert_eq!(
            pairs,
            vec![("prefix", "a/".to_string()), ("limit", "5".to_string())]
        );
    }
}
