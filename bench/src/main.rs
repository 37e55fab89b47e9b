//! `conclave-bench`: a closed-loop load generator (N clients, each with one request
//! in flight, for a fixed duration) against Conclave over HTTP or etcd over its
//! native gRPC API, reporting ops/s and latency percentiles; plus `summary` and
//! `chart`, which turn the `--json` lines of many runs into markdown tables and an
//! SVG. `bench/compare.sh` drives it all against local clusters of both systems.
//!
//! Layout:
//! - `cli.rs`: flags and subcommands;
//! - `driver.rs`: the closed loop and the per-second progress line;
//! - `conclave.rs`, `etcd.rs` (+ `etcd_proto.rs`, hand-written protobuf): the
//!   workloads of each system; Conclave's through its client library
//!   (`conclave-client`, one client per node, each call sent once);
//! - `mixed.rs`, `footprint.rs`: the Conclave-only agent mix and the memory held
//!   by 100,000 stored tasks and 10,000 sessions;
//! - `failover.rs`: kill the leader, time the first acknowledged write after it;
//! - `watch_fanout.rs`: Conclave's event streams (`GET /v1/watch`) under writes:
//!   events delivered per second, delivery lag, missing or duplicate deliveries;
//! - `report.rs`: the result line, the JSON line and per-node RSS;
//! - `summary.rs`, `chart.rs`: medians over rounds → markdown and SVG.

mod chart;
mod cli;
mod conclave;
mod driver;
mod etcd;
mod etcd_proto;
mod failover;
mod footprint;
mod mixed;
mod report;
mod summary;
mod watch_fanout;

use std::sync::Arc;

use clap::Parser;

use crate::cli::{Cli, Command, RunArgs, Target, Workload};
use crate::driver::{Progress, ProgressLine};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Summary { input }) => {
            let summary = summary::summarize(&summary::read_lines(&input)?);
            print!("{}", summary::render(&summary));
            Ok(())
        }
        Some(Command::Chart { input, out, title }) => {
            let summary = summary::summarize(&summary::read_lines(&input)?);
            std::fs::write(&out, chart::render(&summary, &title))?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        None => measure(cli.run).await,
    }
}

async fn measure(args: RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    let progress = Arc::new(Progress::default());
    let line = ProgressLine::start(args.label(), progress.clone());
    let report = match (args.workload, args.target) {
        (Workload::Failover, _) => failover::run(&args, progress).await,
        (_, Target::Conclave) => conclave::run(&args, progress).await,
        (_, Target::Etcd) => etcd::run(&args, progress).await,
    };
    drop(line);
    let mut report = report?;
    report.print();
    let alive: Vec<u32> = match report.extra.get("killed_pid").and_then(|pid| pid.as_u64()) {
        Some(killed) => args
            .pids
            .iter()
            .copied()
            .filter(|pid| u64::from(*pid) != killed)
            .collect(),
        None => args.pids.clone(),
    };
    report.add_rss(&alive);
    if let Some(path) = &args.json {
        report.append_json(path)?;
    }
    Ok(())
}
