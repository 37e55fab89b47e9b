//! The `conclave` binary: `conclave serve [--config FILE]`, `conclave token issue
//! --scope ... --ttl ...`, `conclave snapshot save|restore`, `conclave log
//! export|replay`, and the client commands of `cli` (`member ...`, `status`).

mod cli;

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
        /// Log lines as `text` (colours only on a terminal) or `json` (one object
        /// per line); or set CONCLAVE_LOG_FORMAT. See docs/observability.md.
        #[arg(long, value_name = "FORMAT")]
        log_format: Option<conclave::logging::LogFormat>,
    },
    /// Bearer tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Back up the cluster's state, or seed a new cluster from a backup.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Export a node's committed commands, or replay an export offline.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// List, add, remove or promote cluster members.
    Member {
        #[command(subcommand)]
        command: cli::members::MemberCommand,
    },
    /// The leader, term, commit and applied index, and the members with their
    /// roles, matched indexes and lag (the leader's view).
    Status {
        #[command(flatten)]
        remote: cli::Remote,
        /// Prints the leader's `GET /v1/cluster` body.
        #[arg(long)]
        json: bool,
    },
    #[command(flatten)]
    Resource(cli::ResourceCommand),
}

#[derive(Subcommand)]
enum LogCommand {
    /// Writes the node's latest snapshot and its log up to its applied index to FILE
    /// (for post-mortems and chaos analysis).
    /// Progress goes to stderr. Served by the --endpoint node, not forwarded; needs
    /// an `admin` token.
    Export {
        file: PathBuf,
        #[command(flatten)]
        remote: cli::Remote,
    },
    /// Rebuilds the state from an export offline and prints its Raft index, command
    /// index and state hash (compare with `GET /v1/debug/state` at that index).
    Replay { file: PathBuf },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Saves a consistent backup of the cluster's state (taken on the leader, after
    /// a read-index round) to FILE and prints what it holds. Progress goes to
    /// stderr. Any member will do (it forwards to the leader); needs an `admin` token.
    Save {
        file: PathBuf,
        #[command(flatten)]
        remote: cli::Remote,
    },
    /// Seeds a new single-node cluster's data directory from a backup FILE (disaster
    /// recovery); start it with `serve` and grow it with `serve --join`.
    Restore {
        file: PathBuf,
        /// The new node's directory (new or empty).
        #[arg(long)]
        data_dir: PathBuf,
        /// The config the restored node will run with (its id and addresses);
        /// without one, the single-node defaults (node 1 on 127.0.0.1:7000).
        #[arg(long)]
        config: Option<PathBuf>,
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

/// How a backup or replay summary is printed.
fn shown(summary: &conclave::store::backup::Summary) -> String {
    format!(
        "raft index {}, command index {}, state hash {}",
        summary
            .raft_index
            .map_or_else(|| "none".to_string(), |i| i.to_string()),
        summary.command_index,
        summary.state_hash
    )
}

/// `conclave log export|replay`.
fn log(command: LogCommand) -> anyhow::Result<()> {
    match command {
        LogCommand::Export { file, remote } => {
            let partial = cli::download::download(&remote, "/v1/cluster/log", &file)?;
            let bytes = partial.bytes;
            let replayed = std::fs::read(&partial.path)
                .map_err(anyhow::Error::from)
                .and_then(|read| Ok(conclave::store::backup::replay(&read)?));
            let (summary, entries) = match replayed {
                Ok(replayed) => replayed,
                Err(error) => {
                    partial.discard();
                    return Err(error.context("the export does not replay"));
                }
            };
            partial.keep()?;
            println!(
                "exported {bytes} bytes to {} ({entries} log entries after the snapshot): {}",
                file.display(),
                shown(&summary)
            );
        }
        LogCommand::Replay { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (summary, entries) = conclave::store::backup::replay(&bytes)?;
            println!(
                "replayed {entries} log entries after the snapshot: {}",
                shown(&summary)
            );
        }
    }
    Ok(())
}

/// `conclave snapshot save|restore`.
fn snapshot(command: SnapshotCommand) -> anyhow::Result<()> {
    use conclave::store::backup;
    let show = shown;
    match command {
        SnapshotCommand::Save { file, remote } => {
            let partial = cli::download::download(&remote, "/v1/cluster/backup", &file)?;
            let bytes = partial.bytes;
            let decoded = std::fs::read(&partial.path)
                .map_err(anyhow::Error::from)
                .and_then(|read| Ok(backup::decode(&read)?.1));
            let summary = match decoded {
                Ok(summary) => summary,
                Err(error) => {
                    partial.discard();
                    return Err(error.context("the backup does not decode"));
                }
            };
            partial.keep()?;
            println!(
                "saved {bytes} bytes to {}: {}",
                file.display(),
                show(&summary)
            );
        }
        SnapshotCommand::Restore {
            file,
            data_dir,
            config: path,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let base = config::base_port()?;
            let mut file_config = match &path {
                Some(path) => Config::from_file(path)?,
                None => Config::single_node(base),
            };
            file_config.data_dir = data_dir.clone();
            let node = file_config.resolve(base)?;
            let member = conclave::raft_types::Member {
                addr: node.advertise_addr.clone(),
                raft_addr: node.raft_advertise_addr.clone(),
            };
            let summary = backup::restore(&bytes, &data_dir, node.node_id, member, &node.store)?;
            println!(
                "restored node {} in {}: {}; start it with `conclave serve` on this data \
                 directory, then grow it with `serve --join`",
                node.node_id,
                data_dir.display(),
                show(&summary)
            );
        }
    }
    Ok(())
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
    let cli = Cli::parse();
    let flag = match &cli.command {
        Command::Serve { log_format, .. } => *log_format,
        _ => None,
    };
    let format = conclave::logging::LogFormat::chosen(flag).map_err(anyhow::Error::msg)?;
    conclave::logging::init(format);
    let (path, data_dir, join) = match cli.command {
        Command::Serve {
            config,
            data_dir,
            join,
            join_token,
            join_token_file,
            log_format: _,
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
        Command::Snapshot { command } => return snapshot(command),
        Command::Log { command } => return log(command),
        Command::Member { command } => cli::exit::finish(cli::members::member(command)),
        Command::Status { remote, json } => cli::exit::finish(cli::members::status(remote, json)),
        Command::Resource(command) => cli::resource(command),
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
