//! One logical call over the client's endpoints: which endpoint an attempt goes to
//! (the leader's when a hint named it), what may be retried, the call's deadline and
//! backoff, and the generated `request_id` that makes a write's retries safe.
//!
//! The retry rules are the API's contract (docs/api.md, Error model; docs/client.md):
//! - `503` (`no_leader`, `unavailable`) was definitely not applied: any call is
//!   retried, at the leader the answer names when the client knows its address.
//! - a connection that could not be made sent nothing: any call is retried on the
//!   next endpoint.
//! - `504 indeterminate` and a connection lost after sending leave a write's outcome
//!   unknown: only a call that is safe to repeat is retried — a read, a keepalive, or
//!   a write carrying a `request_id` (the same one on every attempt).
//! - everything else is the call's answer.
//!
//! This module owns no API knowledge beyond that: it must not depend on the
//! endpoint modules (`kv.rs`, `tasks.rs`, ...) or the helpers built on them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{error, Client, Error};

/// The header every node answers with the leader's node id.
pub(crate) const LEADER_HEADER: &str = "x-conclave-leader";

/// What a call may be retried after, beyond the always-safe `503` and connect
/// failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Applies nothing (a `GET`) or is idempotent by nature (a keepalive), or a write
    /// with a `request_id`: also retried after a `504` or a lost connection.
    Repeatable,
    /// A write whose repeat is not deduplicated (a claim, a session end, a barrier
    /// arrival, a membership change): only retried when it was surely not applied.
    Once,
}

/// One logical call.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub segments: &'a [&'a str],
    pub query: Vec<(&'a str, String)>,
    pub body: Option<Value>,
    pub retry: Retry,
    /// Sent to the first endpoint only, once (a node-local answer: `/health`, a
    /// snapshot, this node's cluster view).
    pub pinned: bool,
    /// Caps each attempt below the policy's (a keepalive must not wait out a
    /// paused node for longer than its lease allows).
    pub attempt_timeout: Option<Duration>,
    /// Caps the whole call below the policy's timeout.
    pub timeout: Option<Duration>,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, segments: &'a [&'a str], retry: Retry) -> Call<'a> {
        Call {
            method,
            segments,
            query: Vec::new(),
            body: None,
            retry,
            pinned: false,
            attempt_timeout: None,
            timeout: None,
        }
    }

    pub fn within(mut self, timeout: Duration, attempt_timeout: Duration) -> Call<'a> {
        self.timeout = Some(timeout);
        self.attempt_timeout = Some(attempt_timeout);
        self
    }

    pub fn query(mut self, query: Vec<(&'a str, String)>) -> Call<'a> {
        self.query = query;
        self
    }

    pub fn body(mut self, body: Value) -> Call<'a> {
        self.body = Some(body);
        self
    }

    pub fn pinned(mut self) -> Call<'a> {
        self.pinned = true;
        self
    }

    /// How long the server may hold the request (`wait_ms` of a long poll, a blocking
    /// acquire, in the body or, for a waiting `GET`, in the query): added to the
    /// call's deadline.
    fn server_wait(&self) -> Duration {
        // A complete's or fail's `claim_next` long-polls like a claim.
        let in_body = self
            .body
            .as_ref()
            .and_then(|body| {
                body.get("wait_ms")
                    .or_else(|| body.get("claim_next")?.get("wait_ms"))
            })
            .and_then(Value::as_u64);
        let in_query = || {
            self.query
                .iter()
                .find(|(name, _)| *name == "wait_ms")
                .and_then(|(_, value)| value.parse().ok())
        };
        Duration::from_millis(in_body.or_else(in_query).unwrap_or(0))
    }
}

/// A received answer.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    pub fn decode<T: DeserializeOwned>(self) -> Result<T, Error> {
        match self.decode_optional()? {
            Some(value) => Ok(value),
            None => Err(Error::Unexpected {
                status: StatusCode::NO_CONTENT.as_u16(),
                body: String::new(),
            }),
        }
    }

    /// A `204 No Content` is `None`.
    pub fn decode_optional<T: DeserializeOwned>(self) -> Result<Option<T>, Error> {
        if self.status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !self.status.is_success() {
            return Err(error::from_error_body(self.status.as_u16(), &self.body));
        }
        serde_json::from_slice(&self.body)
            .map(Some)
            .map_err(|_| Error::Unexpected {
                status: self.status.as_u16(),
                body: String::from_utf8_lossy(&self.body).into_owned(),
            })
    }
}

/// How one attempt ended, for the retry decision.
enum Attempt {
    Answered(Answer, Option<u64>),
    /// Nothing was sent (the connection could not be made).
    NotSent(reqwest::Error),
    /// Sent, then no (complete) answer: timeout, reset, a cut body.
    Lost(reqwest::Error),
}

impl Client {
    /// Runs `call` under the client's retry policy.
    pub(crate) async fn execute(&self, call: Call<'_>) -> Result<Answer, Error> {
        let policy = &self.inner.policy;
        let retrying = policy.retry && !call.pinned;
        let body = call.body.as_ref().map(|body| body.to_string());
        let extra = call.server_wait();
        let started = Instant::now();
        let timeout = match (policy.timeout, call.timeout) {
            (Some(policy), Some(call)) => Some(policy.min(call)),
            (policy, call) => policy.or(call),
        };
        let deadline = timeout.map(|timeout| started + timeout + extra);
        let per_attempt = match (policy.attempt_timeout, call.attempt_timeout) {
            (Some(policy), Some(call)) => Some(policy.min(call)),
            (policy, call) => policy.or(call),
        };
        let mut backoff = policy.backoff_initial;
        let mut last: Option<Error> = None;
        loop {
            let (slot, base) = if call.pinned {
                (None, self.inner.base.clone())
            } else {
                let (slot, base) = self.inner.endpoints.pick();
                (Some(slot), base)
            };
            let mut attempt_timeout = per_attempt.map(|timeout| timeout + extra);
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(last.unwrap_or(Error::DeadlineExceeded));
                }
                attempt_timeout = Some(attempt_timeout.map_or(left, |t| t.min(left)));
            }
            let mut request = self
                .inner
                .http
                .request(call.method.clone(), crate::url_under(&base, call.segments)?)
                .query(&call.query);
            if let Some(body) = &body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            if let Some(timeout) = attempt_timeout {
                request = request.timeout(timeout);
            }
            let attempt = self.attempt(request).await;
            let retryable = match &attempt {
                Attempt::Answered(answer, _) => {
                    answer.status == StatusCode::SERVICE_UNAVAILABLE
                        || (answer.status == StatusCode::GATEWAY_TIMEOUT
                            && call.retry == Retry::Repeatable)
                }
                Attempt::NotSent(_) => true,
                Attempt::Lost(_) => call.retry == Retry::Repeatable,
            };
            let error = match attempt {
                Attempt::Answered(answer, leader) => {
                    self.follow_hint(&base, leader).await;
                    if !(retrying && retryable) {
                        return Ok(answer);
                    }
                    // At the leader the answer names, unless that is the node that
                    // just failed (a leader that cannot serve): then the next one.
                    let hinted = hinted_leader(&answer.body).or(leader);
                    let moved = hinted.and_then(|id| self.inner.endpoints.prefer_node(id));
                    if let Some(slot) = slot {
                        if moved.is_none_or(|to| to == slot) {
                            self.inner.endpoints.failed(slot);
                        }
                    }
                    error::from_error_body(answer.status.as_u16(), &answer.body)
                }
                Attempt::NotSent(error) | Attempt::Lost(error) => {
                    if !(retrying && retryable) {
                        return Err(Error::Transport(error));
                    }
                    if let Some(slot) = slot {
                        self.inner.endpoints.failed(slot);
                    }
                    Error::Transport(error)
                }
            };
            last = Some(error);
            self.inner.retries.fetch_add(1, Ordering::Relaxed);
            let pause = jitter(backoff);
            if let Some(deadline) = deadline {
                if Instant::now() + pause >= deadline {
                    return Err(last.unwrap_or(Error::DeadlineExceeded));
                }
            }
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(policy.backoff_max);
        }
    }

    /// Sends one attempt and reads its whole answer.
    async fn attempt(&self, request: RequestBuilder) -> Attempt {
        let response = match self.authorize(request).send().await {
            Ok(response) => response,
            Err(error) if error.is_connect() => return Attempt::NotSent(error),
            Err(error) => return Attempt::Lost(error),
        };
        let status = response.status();
        let leader = response
            .headers()
            .get(LEADER_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        match response.bytes().await {
            Ok(body) => Attempt::Answered(Answer { status, body }, leader),
            Err(error) => Attempt::Lost(error),
        }
    }

    /// Adds the bearer token, if the client has one.
    pub(crate) fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.inner.token {
            Some(bearer) => request.header(AUTHORIZATION, bearer.as_str()),
            None => request,
        }
    }

    /// A leader hint from an answer of `base`: later calls go to the leader when its
    /// address is known; an unknown leader id makes the client read `base`'s member
    /// list (at most once a second) when discovery is on.
    async fn follow_hint(&self, base: &Url, leader: Option<u64>) {
        let Some(leader) = leader else { return };
        if self.inner.endpoints.prefer_node(leader).is_some() || !self.inner.policy.discover {
            return;
        }
        if !self.inner.endpoints.may_refresh() {
            return;
        }
        let request = self
            .inner
            .http
            .get(match crate::url_under(base, &["v1", "cluster"]) {
                Ok(url) => url,
                Err(_) => return,
            })
            .timeout(Duration::from_secs(2));
        let Ok(response) = self.authorize(request).send().await else {
            return;
        };
        let Ok(view) = response.json::<Value>().await else {
            return;
        };
        let members = view["members"].as_array().cloned().unwrap_or_default();
        for member in members {
            if let (Some(id), Some(addr)) = (member["id"].as_u64(), member["addr"].as_str()) {
                self.inner.endpoints.learn(id, base, addr);
            }
        }
        self.inner.endpoints.prefer_node(leader);
    }

    /// A fresh idempotency key for one logical write.
    pub(crate) fn new_request_id(&self) -> String {
        static NONCE: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nonce = *NONCE.get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos() as u64)
                .unwrap_or(0);
            nanos ^ (u64::from(std::process::id()) << 40)
        });
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("cc-{nonce:016x}-{count:x}")
    }

    /// `body` with a `request_id` (the caller's, else a generated one when the client
    /// generates them), and whether it has one.
    pub(crate) fn with_request_id(&self, mut body: Value) -> (Value, Retry) {
        let given = body.get("request_id").is_some_and(Value::is_string);
        if given {
            return (body, Retry::Repeatable);
        }
        if self.inner.policy.request_ids {
            if let Some(object) = body.as_object_mut() {
                object.insert("request_id".into(), Value::String(self.new_request_id()));
                return (body, Retry::Repeatable);
            }
        }
        (body, Retry::Once)
    }
}

/// The `leader_id` of a `503 no_leader` body.
fn hinted_leader(body: &[u8]) -> Option<u64> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value["error"]["leader_id"].as_u64()
}

/// `pause` scaled into [½, 1] by a cheap pseudo-random draw, so clients that failed
/// together do not retry in step.
pub(crate) fn jitter(pause: Duration) -> Duration {
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut x = STATE.load(Ordering::Relaxed)
        ^ u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.subsec_nanos())
                .unwrap_or(0),
        );
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    let fraction = 0.5 + (x % 1000) as f64 / 2000.0;
    pause.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_wait_in_the_body_or_query_extends_the_deadline() {
        let call = Call::new(Method::POST, &["v1"], Retry::Once).body(json!({"wait_ms": 1500}));
        assert_eq!(call.server_wait(), Duration::from_millis(1500));
        let call = Call::new(Method::POST, &["v1"], Retry::Once).body(json!({"value": 1}));
        assert_eq!(call.server_wait(), Duration::ZERO);
        let query = vec![("state", "open".to_owned()), ("wait_ms", "2500".to_owned())];
        let call = Call::new(Method::GET, &["v1"], Retry::Repeatable).query(query);
        assert_eq!(call.server_wait(), Duration::from_millis(2500));
    }

    #[test]
    fn generated_request_ids_are_distinct_and_within_the_limit() {
        let client = Client::builder()
            .endpoint("http://127.0.0.1:1")
            .build()
            .unwrap();
        let a = client.new_request_id();
        let b = client.new_request_id();
        assert_ne!(a, b);
        assert!(a.len() <= 128 && !a.is_empty());
    }

    #[test]
    fn a_callers_request_id_is_kept_and_one_is_added_otherwise() {
        let client = Client::builder()
            .endpoint("http://127.0.0.1:1")
            .build()
            .unwrap();
        let (body, retry) = client.with_request_id(json!({"request_id": "mine"}));
        assert_eq!(
            (body["request_id"].as_str(), retry),
            (Some("mine"), Retry::Repeatable)
        );
        let (body, retry) = client.with_request_id(json!({"value": 1}));
        assert!(body["request_id"].as_str().unwrap().starts_with("cc-"));
        assert_eq!(retry, Retry::Repeatable);
        let legacy = Client::new("http://127.0.0.1:1").unwrap();
        let (body, retry) = legacy.with_request_id(json!({"value": 1}));
        assert_eq!((body.get("request_id"), retry), (None, Retry::Once));
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        for _ in 0..100 {
            let pause = jitter(Duration::from_millis(100));
            assert!(pause >= Duration::from_millis(50) && pause <= Duration::from_millis(100));
        }
    }

    #[test]
    fn a_no_leader_body_names_the_leader() {
        let body = br#"{"error":{"code":"no_leader","message":"m","leader_id":3}}"#;
        assert_eq!(hinted_leader(body), Some(3));
        assert_eq!(hinted_leader(b"{}"), None);
    }
}
