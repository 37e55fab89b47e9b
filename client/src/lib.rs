//! `conclave-client`: a typed HTTP client for Conclave's API as implemented today
//! (`docs/api.md`): key/value, request lookup, sessions, tasks, locks, semaphores,
//! barriers, elections, cluster operations, `/health` and `/ready`.
//!
//! It speaks only HTTP + JSON and must not depend on the server crate (`conclave`)
//! or any of its types, so agents and tools can use it without linking the server.
//! Integration tests use it instead of hand-written request helpers.
//!
//! # Layout
//!
//! - `lib.rs`: [`Client`] (base URL + a shared `reqwest::Client`), path building
//!   (every path segment percent-encoded, so a key may contain `/`), sending and
//!   reading answers, [`Consistency`].
//! - `error.rs`: [`Error`] and [`ApiError`] (status, stable `code`, `message`).
//! - `kv.rs`, `sessions.rs`, `tasks.rs`, `primitives.rs` (locks, semaphores,
//!   barriers, elections), `cluster.rs` (cluster, requests, health, ready): one
//!   `impl Client` block per API area, with its request and response types.
//!
//! Responses are typed structs where the shape is small and stable, and
//! `serde_json::Value` for the large views (a task, a session, the cluster).

mod cluster;
mod error;
mod kv;
mod primitives;
mod sessions;
mod tasks;

pub use cluster::{Health, MemberAdd, Ready, Snapshot};
pub use error::{ApiError, Error};
pub use kv::{Deleted, KvDelete, KvList, KvPut, Written};
pub use primitives::{
    Acquired, BarrierWait, BarrierWaited, Campaign, Campaigned, LockAcquire, LockMode, Release,
    Released, Resign, SemaphoreAcquire,
};
pub use serde_json::Value;
pub use sessions::{Keepalive, SessionCreate, SessionCreated, SessionEnded, SessionList};
pub use tasks::{
    Claimed, Heartbeat, HeartbeatSent, TaskComplete, TaskFail, TaskList, TaskSubmit, TaskSubmitted,
    TaskWritten,
};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

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

/// A client of one Conclave node (any node: writes are forwarded to the leader).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

impl Client {
    /// A client of the node at `base_url` (`http://127.0.0.1:7000`) with its own
    /// connection pool.
    pub fn new(base_url: &str) -> Result<Client, Error> {
        Client::with_http(base_url, reqwest::Client::new())
    }

    /// A client of the node at `base_url` sharing `http`'s pool and timeouts.
    pub fn with_http(base_url: &str, http: reqwest::Client) -> Result<Client, Error> {
        let invalid = || Error::InvalidBaseUrl(base_url.to_owned());
        let base = Url::parse(base_url).map_err(|_| invalid())?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(invalid());
        }
        Ok(Client { http, base })
    }

    /// The node's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The shared `reqwest::Client`, for requests this crate has no method for.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The URL of `segments` under the base URL, each segment percent-encoded (a `/`
    /// inside a segment becomes `%2F`; the server decodes it back). A segment `.` or
    /// `..` cannot be sent: URLs normalize it away even percent-encoded (WHATWG), so
    /// `/v1/kv/..` would address `/v1`; it is `Error::UnsendableSegment`.
    pub fn url(&self, segments: &[&str]) -> Result<Url, Error> {
        if let Some(segment) = segments.iter().find(|s| **s == "." || **s == "..") {
            return Err(Error::UnsendableSegment((*segment).to_owned()));
        }
        let mut path = self.base.path().trim_end_matches('/').to_owned();
        for segment in segments {
            path.push('/');
            path.push_str(&encode_segment(segment));
        }
        let mut url = self.base.clone();
        url.set_path(&path);
        Ok(url)
    }

    pub(crate) fn request(
        &self,
        method: Method,
        segments: &[&str],
    ) -> Result<RequestBuilder, Error> {
        Ok(self.http.request(method, self.url(segments)?))
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
        let mut request = self.request(Method::GET, segments)?.query(query);
        if consistency != Consistency::default() {
            request = request.query(&[("consistency", consistency.as_str())]);
        }
        receive(request).await
    }

    /// `method segments` with a JSON body, read as `T`.
    pub(crate) async fn write<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
    ) -> Result<T, Error> {
        receive(self.request(method, segments)?.json(body)).await
    }
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
