//! The `conclave` binary: `conclave serve [--config FILE]` and
//! `conclave token issue --scope ... --ttl ...`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use conclave::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "conclave",
    version,
    about = "A Raft-replicated coordination server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node. With no --config: a single-node cluster on 127.0.0.1:7000 with its
    /// data in ./conclave-data (initialized on first start, reopened after).
    Serve {
        /// A TOML node config (see config/node1.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides the config's data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Join an existing cluster: once serving, ask the member at this
        /// `host:port` (its client API) to add this node as a voter. The config
        /// lists no initial_members. See docs/operations.md, Grow the cluster.
        #[arg(long, value_name = "HOST:PORT")]
        join: Option<String>,
        /// The bearer token (`join` or `admin` scope) the join request presents; or set
        /// CONCLAVE_JOIN_TOKEN, or use --join-token-file.
        #[arg(long, value_name = "TOKEN", requires = "join")]
        join_token: Option<String>,
        /// A file holding the join token (e.g. cluster/run/admin.token).
        #[arg(
            long,
            value_name = "FILE",
            requires = "join",
            conflicts_with = "join_token"
        )]
        join_token_file: Option<PathBuf>,
    },
    /// Bearer tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mints a token signed with the first auth key (of --config's [auth] keys, or
    /// of CONCLAVE_AUTH_KEYS) and prints it.
    Issue {
        /// The node config whose [auth] keys sign the token.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Who the token is for.
        #[arg(long, default_value = "admin")]
        subject: String,
        /// A scope: admin, read, agent, agent:<kind>, agent:<kind>:<prefix> (repeat
        /// for several).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// How long it is valid: 90s, 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
}

/// `conclave token issue`: prints the token.
fn issue_token(
    config: Option<PathBuf>,
    subject: &str,
    scopes: &[String],
    ttl: &str,
) -> anyhow::Result<()> {
    use conclave::auth::token;
    let settings = match &config {
        Some(path) => Config::from_file(path)?.auth,
        None => Default::default(),
    };
    let keys = settings.effective_keys();
    anyhow::ensure!(
        !keys.is_empty(),
        "no auth keys: pass --config with [auth] keys, or set {}",
        config::AUTH_KEYS_ENV
    );
    let ttl_s = token::parse_ttl(ttl).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        ttl_s > 0 && ttl_s <= conclave::limits::MAX_TOKEN_TTL_S,
        "ttl must be 1 s to {} days",
        conclave::limits::MAX_TOKEN_TTL_S / 86_400
    );
    let keys = conclave::auth::Keys::new(&keys).map_err(anyhow::Error::msg)?;
    let minted = keys
        .issue(subject, scopes, token::now_s(), ttl_s)
        .map_err(anyhow::Error::msg)?;
    println!("{minted}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONCLAVE_LOG")
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn".into()),
        )
        .init();
    let (path, data_dir, join) = match Cli::parse().command {
        Command::Serve {
            config,
            data_dir,
            join,
            join_token,
            join_token_file,
        } => {
            let join = join
                .map(|addr| -> anyhow::Result<conclave::join::Join> {
                    let token = match (join_token, join_token_file) {
                        (Some(token), _) => Some(token),
                        (None, Some(file)) => Some(
                            std::fs::read_to_string(&file)
                                .with_context(|| format!("reading {}", file.display()))?
                                .trim()
                                .to_owned(),
                        ),
                        (None, None) => std::env::var("CONCLAVE_JOIN_TOKEN").ok(),
                    };
                    Ok(conclave::join::Join { addr, token })
                })
                .transpose()?;
            (config, data_dir, join)
        }
        Command::Token {
            command:
                TokenCommand::Issue {
                    config,
                    subject,
                    scopes,
                    ttl,
                },
        } => return issue_token(config, &subject, &scopes, &ttl),
    };
    let base = config::base_port()?;
    let mut file = match &path {
        Some(path) => Config::from_file(path)?,
        None => Config::single_node(base),
    };
    if let Some(data_dir) = data_dir {
        file.data_dir = data_dir;
    }
    if join.is_some() && !file.initial_members.is_empty() {
        anyhow::bail!(
            "--join adds this node to an existing cluster: its config must list no initial_members"
        );
    }
    let mut node = file.resolve(base)?;
    node.join = join;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(node.listen_addr)
            .await
            .with_context(|| format!("binding {}", node.listen_addr))?;
        let raft_listener = tokio::net::TcpListener::bind(node.raft_listen_addr)
            .await
            .with_context(|| format!("binding raft_listen_addr {}", node.raft_listen_addr))?;
        conclave::node::run(node, listener, raft_listener, shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}
