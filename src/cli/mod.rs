//! The `conclave` binary's client commands, which act on a running cluster over its
//! HTTP API: `member list|add|remove|promote`, `status` (`members.rs`), and the
//! binary downloads of `snapshot save` and `log export` (`download.rs`). This file
//! owns what they share: which node to ask and with which token ([`Remote`]), and
//! the runtime they run on.
//!
//! Must not depend on the server's internals (replica, state machine, storage):
//! these commands speak HTTP + JSON through `conclave-client` like any other tool,
//! so what they show is what the API answers.

pub mod call;
pub mod download;
pub mod exit;
pub mod members;
pub mod primitives;
pub mod progress;
pub mod render;
pub mod resources;
pub mod run;
pub mod watch;

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
    /// A node's client address, `host:port` (HTTPS when --ca is given, else plain
    /// HTTP; or a full `https://host:port`); or several, comma-separated (or set
    /// CONCLAVE_ENDPOINTS): the resource commands try the next when one cannot be
    /// connected to.
    #[arg(
        long,
        visible_alias = "addr",
        visible_alias = "endpoints",
        value_name = "HOST:PORT",
        env = "CONCLAVE_ENDPOINTS",
        default_value = "127.0.0.1:7000",
        global = true
    )]
    pub endpoint: String,
    /// The bearer token; or set CONCLAVE_TOKEN, or use --token-file.
    #[arg(long, value_name = "TOKEN", global = true)]
    pub token: Option<String>,
    /// A file holding the bearer token (e.g. cluster/run/admin.token).
    #[arg(long, value_name = "FILE", conflicts_with = "token", global = true)]
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the nodes' certificates (their `[tls]
    /// ca`): the CLI then speaks HTTPS and trusts only that CA.
    #[arg(long, value_name = "FILE", env = "CONCLAVE_CA", global = true)]
    pub ca: Option<PathBuf>,
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

    /// The base URL of `addr`: as given when it names its scheme, else `host:port`
    /// over HTTPS with `--ca` and plain HTTP without.
    pub fn url_of(&self, addr: &str) -> String {
        if addr.contains("://") {
            return addr.to_owned();
        }
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }

    /// The headers every request carries: the bearer token, if any.
    pub fn headers(&self) -> anyhow::Result<reqwest::header::HeaderMap> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = self.token()? {
            let value = format!("Bearer {token}")
                .parse()
                .context("the token is not a valid header value")?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(headers)
    }

    /// An HTTP client that sends the token on every request and, with `--ca`,
    /// trusts that CA (and no other: the build has no built-in roots).
    pub fn http(&self) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .default_headers(self.headers()?)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        if let Some(ca) = &self.ca {
            let pem =
                std::fs::read(ca).with_context(|| format!("reading --ca {}", ca.display()))?;
            let certificate = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("--ca {}: not a PEM certificate", ca.display()))?;
            builder = builder
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(certificate);
        }
        builder.build().context("building the HTTP client")
    }

    /// A typed client of the (first) node `--endpoint` names, sharing `http`.
    pub fn client(&self, http: &reqwest::Client) -> anyhow::Result<conclave_client::Client> {
        let first = self.endpoints().next().unwrap_or_default();
        self.client_of(first, http)
    }

    /// The nodes `--endpoint` names, in order.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.endpoint
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }

    /// A typed client of the node at `endpoint`, sharing `http`.
    pub fn client_of(
        &self,
        endpoint: &str,
        http: &reqwest::Client,
    ) -> anyhow::Result<conclave_client::Client> {
        conclave_client::Client::with_http(&self.url_of(endpoint), http.clone())
            .with_context(|| format!("--endpoint {endpoint:?}"))
    }
}

/// A single-threaded runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// The resource commands (`conclave kv ...`, `conclave lock ...`, `conclave watch`).
#[derive(clap::Subcommand, Debug)]
pub enum ResourceCommand {
    /// Read, write, delete and list keys.
    Kv {
        #[command(subcommand)]
        command: resources::KvCommand,
        #[command(flatten)]
        common: call::Common,
    },
    /// Open, renew, end, show and list sessions.
    Session {
        #[command(subcommand)]
        command: resources::SessionCommand,
        #[command(flatten)]
        common: call::Common,
    },
    /// Submit, claim, complete, fail, cancel, retry, show and list tasks.
    Task {
        #[command(subcommand)]
        command: resources::TaskCommand,
        #[command(flatten)]
        common: call::Common,
    },
    /// Acquire, release, show and list locks; or `conclave lock NAME -- CMD...`:
    /// run CMD while holding lock NAME (its fencing token in
    /// CONCLAVE_FENCING_TOKEN), stopping it if the lock is lost.
    #[command(args_conflicts_with_subcommands = true)]
    Lock {
        #[command(subcommand)]
        command: Option<primitives::LockCommand>,
        /// The lock to hold while CMD runs.
        name: Option<String>,
        /// The program and its arguments, after `--`.
        #[arg(last = true)]
        run: Vec<String>,
        #[command(flatten)]
        held: run::Held,
        #[command(flatten)]
        common: call::Common,
    },
    /// Claim tasks and run a command per task: `conclave worker --capability a,b --
    /// CMD...` (payload on stdin, result from stdout, exit code → complete or fail).
    Worker {
        #[command(flatten)]
        args: run::WorkerArgs,
        #[command(flatten)]
        common: call::Common,
    },
    /// Acquire, release and show semaphores.
    Semaphore {
        #[command(subcommand)]
        command: primitives::SemaphoreCommand,
        #[command(flatten)]
        common: call::Common,
    },
    /// Wait at and show barriers.
    Barrier {
        #[command(subcommand)]
        command: primitives::BarrierCommand,
        #[command(flatten)]
        common: call::Common,
    },
    /// Campaign, resign and show elections.
    Election {
        #[command(subcommand)]
        command: primitives::ElectionCommand,
        #[command(flatten)]
        common: call::Common,
    },
    /// Create, vote on, show and list proposals.
    Proposal {
        #[command(subcommand)]
        command: primitives::ProposalCommand,
        #[command(flatten)]
        common: call::Common,
    },
    /// Create, vote on, ack and show two-phase commits.
    #[command(name = "2pc")]
    TwoPhase {
        #[command(subcommand)]
        command: primitives::TwoPhaseCommand,
        #[command(flatten)]
        common: call::Common,
    },
    /// Apply the transaction in FILE (`-`: stdin), a `POST /v1/txn` body.
    Txn {
        file: PathBuf,
        #[command(flatten)]
        common: call::Common,
    },
    /// Print events as they are applied (`GET /v1/watch`).
    Watch {
        #[command(flatten)]
        args: watch::WatchArgs,
        #[command(flatten)]
        common: call::Common,
    },
}

/// Runs a resource command and exits with its code (`exit`).
pub fn resource(command: ResourceCommand) -> ! {
    use ResourceCommand as R;
    exit::finish(match command {
        R::Kv { command, common } => resources::kv(&common, command),
        R::Session { command, common } => resources::session(&common, command),
        R::Task { command, common } => resources::task(&common, command),
        R::Lock {
            command: Some(command),
            common,
            ..
        } => primitives::lock(&common, command),
        R::Lock {
            command: None,
            name,
            run,
            held,
            common,
        } => match (name, run.is_empty()) {
            (Some(name), false) => match run::hold(&common, &name, &run, &held) {
                Ok(code) => std::process::exit(code),
                Err(error) => Err(error),
            },
            _ => Err(anyhow::anyhow!(
                "usage: conclave lock NAME -- CMD..., or conclave lock acquire|release|get|list"
            )),
        },
        R::Worker { args, common } => run::worker(&common, &args),
        R::Semaphore { command, common } => primitives::semaphore(&common, command),
        R::Barrier { command, common } => primitives::barrier(&common, command),
        R::Election { command, common } => primitives::election(&common, command),
        R::Proposal { command, common } => primitives::proposal(&common, command),
        R::TwoPhase { command, common } => primitives::two_phase(&common, command),
        R::Txn { file, common } => primitives::txn(&common, &file),
        R::Watch { args, common } => watch::watch(&common, args),
    })
}
