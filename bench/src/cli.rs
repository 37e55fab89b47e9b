//! Command-line surface: the flags of a measured run and the two offline
//! subcommands (`summary`, `chart`). Parsing only; `main.rs` dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "conclave-bench",
    about = "Closed-loop load generator for Conclave and etcd, plus the table and chart makers",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand)]
pub enum Command {
    /// Markdown tables (medians over rounds) from the JSON lines of `--json`.
    Summary {
        #[arg(long)]
        input: PathBuf,
    },
    /// An SVG of throughput and p99 per client count, both systems, from `--json` lines.
    Chart {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The heading over the panels.
        #[arg(
            long,
            default_value = "Conclave and etcd, 3 nodes each, medians over rounds"
        )]
        title: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Conclave,
    Etcd,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Conclave => "conclave",
            Target::Etcd => "etcd",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Write a 64-byte value (1,000 keys per client).
    Put,
    /// Linearizable read of one key per client.
    Get,
    /// Member-local read (Conclave `?consistency=stale`, etcd `serializable`).
    StaleGet,
    /// Conclave only: each client is an agent; submit → claim → complete.
    TaskCycle,
    /// Conclave only: the task cycle in two requests (#16): submit, then complete
    /// the held task with `claim_next`, which claims the next one in the same
    /// command.
    TaskCycleNext,
    /// Conclave only: `--sessions` sessions renewed once a second.
    Keepalive,
    /// Conclave only: agents with sessions mixing tasks, locks and key/value
    /// (every HTTP request is one op).
    Mixed,
    /// Conclave only: store `--sessions` sessions and `--tasks` queued tasks, then
    /// report each node's RSS (`--pids`) and the time taken.
    Footprint,
    /// Acquire + release of a lock per client (distinct locks).
    Lock,
    /// Acquire (waiting) + release of one lock shared by all clients.
    ContendedLock,
    /// One writer; SIGKILL the leader (needs `--pids`) and time the first
    /// acknowledged write after it.
    Failover,
    /// Conclave only (#13): `--watchers` `GET /v1/watch` streams over all nodes while
    /// `--clients` writers put under their prefix; events delivered/s, delivery lag,
    /// missing and duplicate deliveries.
    WatchFanout,
}

impl Workload {
    /// The name on the command line, in reports and in JSON lines.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Placement {
    /// Clients spread round-robin over every node (followers forward to the leader).
    Spread,
    /// Every client talks to the current leader.
    Leader,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::Spread => "spread",
            Placement::Leader => "leader",
        }
    }
}

#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// System under test.
    #[arg(long, value_enum, default_value = "conclave")]
    pub target: Target,
    /// Conclave node base URLs.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:7000")]
    pub urls: Vec<String>,
    /// etcd client URLs (gRPC).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    #[arg(long, value_enum, default_value = "spread")]
    pub placement: Placement,
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    #[arg(long, value_enum, default_value = "put")]
    pub workload: Workload,
    /// Sessions kept alive by the `keepalive` workload, or stored by `footprint`.
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Event streams (`GET /v1/watch`) of the `watch-fanout` workload, spread
    /// round-robin over every node of --urls whatever the placement.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Tasks stored (and left queued) by the `footprint` workload.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    /// etcd: clients sharing one HTTP/2 connection (gRPC multiplexes; Conclave's
    /// HTTP/1.1 clients each hold their own connection).
    #[arg(long, default_value_t = 8)]
    pub clients_per_connection: usize,
    /// Node process ids, in the order of --urls / --endpoints: RSS is reported for
    /// each after the run, and `failover` kills the leader's.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Append one JSON line with the result to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl RunArgs {
    /// Seconds a session or lease must live to outlast the run without renewal.
    pub fn ttl_secs(&self) -> u64 {
        self.duration + 60
    }

    pub fn label(&self) -> String {
        format!(
            "{} {} c={}",
            self.target.name(),
            self.workload.name(),
            self.clients
        )
    }
}
