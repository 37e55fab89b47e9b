//! [`ClientBuilder`]: a client over a list of endpoints with a bearer token, an
//! overall timeout per call, bounded backoff and generated `request_id`s, and the
//! [`Policy`] it leaves in the client.
//!
//! Configuration only: it must not send anything (the retry loop is `call.rs`).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use crate::endpoints::Endpoints;
use crate::{Client, Error, Inner};

/// How a client retries (see `docs/client.md`, Retry rules).
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Retry at all (off for [`Client::new`] / [`Client::with_http`]).
    pub retry: bool,
    /// Give writes that accept a `request_id` a generated one when the caller gave
    /// none.
    pub request_ids: bool,
    /// Follow leader hints to members not in the list (from `GET /v1/cluster`).
    pub discover: bool,
    /// Overall time of one call, retries included (plus the request's `wait_ms`).
    pub timeout: Option<Duration>,
    /// Longest single attempt (plus the request's `wait_ms`).
    pub attempt_timeout: Option<Duration>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Policy {
    /// One attempt, no generated ids: the behaviour of a client of one node.
    pub fn single() -> Policy {
        Policy {
            retry: false,
            request_ids: false,
            discover: false,
            timeout: None,
            attempt_timeout: None,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
        }
    }
}

/// Builds a [`Client`] over several endpoints:
///
/// ```no_run
/// # fn main() -> Result<(), conclave_client::Error> {
/// use std::time::Duration;
/// let client = conclave_client::Client::builder()
///     .endpoints(["http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003"])
///     .token("eyJ...")
///     .timeout(Duration::from_secs(20))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    token: Option<String>,
    http: Option<reqwest::Client>,
    policy: Policy,
}

impl std::fmt::Debug for ClientBuilder {
    /// Everything but the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoints", &self.endpoints)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("policy", &self.policy)
            .finish()
    }
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            endpoints: Vec::new(),
            token: None,
            http: None,
            policy: Policy {
                retry: true,
                request_ids: true,
                discover: true,
                timeout: Some(Duration::from_secs(30)),
                attempt_timeout: Some(Duration::from_secs(10)),
                backoff_initial: Duration::from_millis(50),
                backoff_max: Duration::from_secs(1),
            },
        }
    }
}

impl ClientBuilder {
    /// Adds endpoints (`http://host:port`), tried in this order until one answers.
    pub fn endpoints<I, S>(mut self, endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints.extend(endpoints.into_iter().map(Into::into));
        self
    }

    /// Adds one endpoint.
    pub fn endpoint(self, endpoint: impl Into<String>) -> ClientBuilder {
        self.endpoints([endpoint.into()])
    }

    /// The bearer token sent on every request.
    pub fn token(mut self, token: impl Into<String>) -> ClientBuilder {
        self.token = Some(format!("Bearer {}", token.into()));
        self
    }

    /// Overall time of one call, every retry included (default 30 s). A long poll's
    /// or blocking acquire's `wait_ms` is added to it.
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.policy.timeout = Some(timeout);
        self
    }

    /// Longest single attempt before it counts as lost (default 10 s, plus the
    /// request's `wait_ms`), so a paused node does not take the whole call.
    pub fn attempt_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.policy.attempt_timeout = Some(timeout);
        self
    }

    /// First and largest pause between attempts (default 50 ms doubling to 1 s, each
    /// drawn in [½, 1] of the step).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> ClientBuilder {
        self.policy.backoff_initial = initial;
        self.policy.backoff_max = max.max(initial);
        self
    }

    /// Whether writes get a generated `request_id` when the caller gave none
    /// (default on). Off, a write without one is never retried after a `504` or a
    /// lost connection.
    pub fn request_ids(mut self, on: bool) -> ClientBuilder {
        self.policy.request_ids = on;
        self
    }

    /// Whether a leader hint naming a node not in the list makes the client read the
    /// member list and add its address (default on).
    pub fn discover(mut self, on: bool) -> ClientBuilder {
        self.policy.discover = on;
        self
    }

    /// Whether calls are retried at all (default on).
    pub fn retry(mut self, on: bool) -> ClientBuilder {
        self.policy.retry = on;
        self
    }

    /// The `reqwest::Client` to send with (its TLS roots, proxies, pool). By default
    /// one with a 10 s idle-connection timeout, under the server's keep-alive timeout.
    pub fn http(mut self, http: reqwest::Client) -> ClientBuilder {
        self.http = Some(http);
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let urls = self
            .endpoints
            .iter()
            .map(|endpoint| crate::parse_base(endpoint))
            .collect::<Result<Vec<Url>, Error>>()?;
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(10))
                .build()?,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base: urls[0].clone(),
                endpoints: Endpoints::new(urls),
                token: self.token,
                policy: self.policy,
                retries: AtomicU64::new(0),
            }),
        })
    }
}
