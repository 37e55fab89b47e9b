//! The `conclave` binary: `conclave serve [--config FILE]`.

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
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONCLAVE_LOG")
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn".into()),
        )
        .init();
    let Command::Serve {
        config: path,
        data_dir,
    } = Cli::parse().command;
    let base = config::base_port()?;
    let mut file = match &path {
        Some(path) => Config::from_file(path)?,
        None => Config::single_node(base),
    };
    if let Some(data_dir) = data_dir {
        file.data_dir = data_dir;
    }
    let node = file.resolve(base)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(node.listen_addr)
            .await
            .with_context(|| format!("binding {}", node.listen_addr))?;
        conclave::node::run(node, listener, shutdown_signal()).await?;
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
