//! The `conclave` binary's client commands, which act on a running cluster over its
//! HTTP API: `member list|add|remove|promote`, `status` (`members.rs`), and the
//! binary downloads of `snapshot save` and `log export` (`download.rs`). This file
//! owns what they share: which node to ask and with which token ([`Remote`]), and
//! the runtime they run on.
//!
//! Must not depend on the server's internals (replica, state machine, storage):
//! these commands speak HTTP + JSON through `conclave-client` like any other tool,
//! so what they show is what the API answers.

pub mod download;
pub mod members;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// How long one request may take: the longest membership request (two changes and
/// the learner catch-up wait, `limits::MEMBERSHIP_REQUEST_TIMEOUT`) and a margin.
const REQUEST_TIMEOUT: Duration =
    Duration::from_secs(conclave::limits::MEMBERSHIP_REQUEST_TIMEOUT.as_secs() + 5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The node a command asks, and the bearer token it presents.
#[derive(clap::Args, Debug, Clone)]
pub struct Remote {
    /// A node's client address, `host:port` (plain HTTP).
    #[arg(
        long,
        visible_alias = "addr",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:7000"
    )]
    pub endpoint: String,
    /// The bearer token; or set CONCLAVE_TOKEN, or use --token-file.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// A file holding the bearer token (e.g. cluster/run/admin.token).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
}

impl Remote {
    /// The token: `--token`, else `--token-file`'s contents, else `CONCLAVE_TOKEN`.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        if let Some(file) = &self.token_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            return Ok(Some(text.trim().to_owned()));
        }
        Ok(std::env::var("CONCLAVE_TOKEN").ok())
    }

    /// The base URL of `addr` (`host:port`).
    pub fn url_of(addr: &str) -> String {
        format!("http://{addr}")
    }

    /// An HTTP client that sends the token on every request.
    pub fn http(&self) -> anyhow::Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = self.token()? {
            let value = format!("Bearer {token}")
                .parse()
                .context("the token is not a valid header value")?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")
    }

    /// A typed client of the node at `--endpoint`, sharing `http`.
    pub fn client(&self, http: &reqwest::Client) -> anyhow::Result<conclave_client::Client> {
        let url = Self::url_of(&self.endpoint);
        conclave_client::Client::with_http(&url, http.clone())
            .with_context(|| format!("--endpoint {:?}", self.endpoint))
    }
}

/// A single-threaded runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}
