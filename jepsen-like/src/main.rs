//! `jepsen-like`: run one chaos cell, or the smoke tier, and exit 0 only when every
//! checker passed. See `jepsen-like/README.md`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use jepsen_like::nemesis::Nemesis;
use jepsen_like::run::{execute, RunConfig};
use jepsen_like::workloads::Workload;

/// The smoke tier: every cell of these workloads × nemeses, this long each.
/// The decision workloads share the register cells (one cell per nemesis for them).
const SMOKE_WORKLOADS: [Workload; 3] =
    [Workload::RegisterDecisions, Workload::Lock, Workload::Tasks];
const SMOKE_NEMESES: [Nemesis; 3] = [Nemesis::Kill, Nemesis::Pause, Nemesis::PartitionMajority];
const SMOKE_SECONDS: u64 = 25;

#[derive(Parser)]
#[command(about = "Chaos harness for Conclave")]
struct Args {
    /// Run the smoke tier (see SMOKE_*) instead of one cell.
    #[arg(long)]
    smoke: bool,
    #[arg(long, value_enum, default_value = "register")]
    workload: Workload,
    #[arg(long, value_enum, default_value = "kill")]
    nemesis: Nemesis,
    /// Seconds of workload under faults.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seed of the fault schedule and the clients (random if absent).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    #[arg(long, default_value_t = 6)]
    processes: usize,
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Plant a known server bug (`stale-reads`) to show the checker catches it.
    #[arg(long)]
    inject_bug: Option<String>,
    /// The conclave binary to run (built with the `test-switches` feature, as run.sh does).
    #[arg(long, default_value = "target/chaos/release/conclave")]
    binary: PathBuf,
    /// Where report folders go.
    #[arg(long, default_value = "jepsen-like/runs")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let cells: Vec<(Workload, Nemesis, u64)> = if args.smoke {
        let mut cells = Vec::new();
        for workload in SMOKE_WORKLOADS {
            for nemesis in SMOKE_NEMESES {
                cells.push((workload, nemesis, SMOKE_SECONDS));
            }
        }
        cells
    } else {
        vec![(args.workload, args.nemesis, args.duration)]
    };
    let mut all_passed = true;
    for (workload, nemesis, duration) in cells {
        let name = format!(
            "{}-{}-{}-{seed}",
            std::process::id(),
            workload.name(),
            nemesis.name()
        );
        let mut command = format!(
            "jepsen-like/run.sh --workload {} --nemesis {} --duration {duration} --seed {seed} --nodes {}",
            workload.name(),
            nemesis.name(),
            args.nodes
        );
        if let Some(bug) = &args.inject_bug {
            command.push_str(&format!(" --inject-bug {bug}"));
        }
        let config = RunConfig {
            binary: args.binary.clone(),
            out: args.out.join(&name),
            workload,
            nemesis,
            duration: Duration::from_secs(duration),
            seed,
            nodes: args.nodes,
            processes: args.processes,
            keys: args.keys,
            inject_bug: args.inject_bug.clone(),
            command: command.clone(),
        };
        let out = config.out.clone();
        let report = execute(config).await?;
        let c = report.total();
        println!(
            "{name}: {} | ops attempted {} ok {} fail {} unknown {} unavailable {} | faults {} | recovery {:?} ms | converged {} | report {}",
            report.verdict.to_uppercase(),
            c.attempted,
            c.ok,
            c.fail,
            c.unknown,
            c.unavailable,
            report.faults.len(),
            report.recovery_ms,
            report.convergence.converged,
            out.join("report.json").display()
        );
        for check in &report.checks {
            println!("  {:?} {}: {}", check.verdict, check.name, check.summary);
        }
        if report.verdict != "pass" {
            println!("  reproduce: {command}");
            all_passed = false;
        }
    }
    std::process::exit(if all_passed { 0 } else { 1 });
}
