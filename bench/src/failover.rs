//! The `failover` measurement, for either system: one client writes continuously
//! through a node that is not the leader, the leader's process is SIGKILLed (its pid
//! comes from `--pids`, in the order of the node list), and the report gives the
//! time from the kill until the first write *sent after the kill* is acknowledged,
//! and until a survivor names a new leader. After the kill, writes start every
//! 5 ms without waiting for earlier ones, so no client timeout shapes the result.
//! Conclave's writer is a client-library client of its one node that sends each
//! write once (`conclave::Nodes`): the `503`s and refused connections of the
//! election are counted, not retried elsewhere. Owns the kill; never restarts
//! anything (the caller's script does).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map};

use crate::cli::{RunArgs, Target};
use crate::conclave::{self, Nodes};
use crate::driver::{Outcome, Progress, Tally};
use crate::etcd::{self, Etcd};
use crate::report::Report;

/// A write slower than this counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After the kill a new write starts this often, whether or not earlier ones have
/// answered, so the result does not depend on a client timeout or retry policy.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// Writes before the kill (a baseline) and after recovery (a check).
const STEADY: Duration = Duration::from_secs(1);
/// Give up when nothing is acknowledged for this long after the kill.
const GIVE_UP: Duration = Duration::from_secs(30);

enum Writer {
    Conclave(conclave_client::Client),
    Etcd(Etcd),
}

impl Writer {
    async fn write(&self, sequence: u64) -> Outcome {
        match self {
            Writer::Conclave(api) => {
                let key = format!("failover/{}", sequence % 100);
                let value = json!(sequence);
                match tokio::time::timeout(WRITE_TIMEOUT, api.kv_put(&key, &value)).await {
                    Ok(put) => put.map(drop).map_err(conclave::kind),
                    Err(_) => Err("timeout".to_owned()),
                }
            }
            Writer::Etcd(etcd) => {
                let key = format!("failover/{}", sequence % 100).into_bytes();
                let put = etcd.put(key, sequence.to_string().into_bytes());
                match tokio::time::timeout(WRITE_TIMEOUT, put).await {
                    Ok(outcome) => outcome.map_err(etcd::grpc_error),
                    Err(_) => Err("timeout".to_owned()),
                }
            }
        }
    }
}

/// The cluster as the measurement needs it: who leads, and how to ask survivors.
struct Cluster {
    nodes: Vec<String>,
    /// Conclave's nodes, in the order of `nodes`; `None` for etcd.
    conclave: Option<Nodes>,
    leader_index: usize,
    leader_id: u64,
}

impl Cluster {
    async fn discover(args: &RunArgs) -> anyhow::Result<Self> {
        match args.target {
            Target::Conclave => {
                let nodes = Nodes::connect(&args.urls)?;
                let leader = conclave::leader(&nodes).await?;
                let leader_index = args
                    .urls
                    .iter()
                    .position(|url| url.trim_end_matches('/') == leader.url)
                    .ok_or_else(|| anyhow::anyhow!("leader {} is not in --urls", leader.url))?;
                Ok(Self {
                    nodes: args.urls.clone(),
                    conclave: Some(nodes),
                    leader_index,
                    leader_id: leader.id,
                })
            }
            Target::Etcd => {
                let (leader_index, leader_id) = etcd::leader(&args.endpoints).await?;
                Ok(Self {
                    nodes: args.endpoints.clone(),
                    conclave: None,
                    leader_index,
                    leader_id,
                })
            }
        }
    }

    /// Whether a surviving node names a leader other than the killed one.
    async fn new_leader_known(&self) -> bool {
        for (index, node) in self.nodes.iter().enumerate() {
            if index == self.leader_index {
                continue;
            }
            let leader = match &self.conclave {
                Some(nodes) => conclave::cluster_status(nodes.client(index))
                    .await
                    .ok()
                    .and_then(|status| status["leader_id"].as_u64()),
                None => match Etcd::connect(node).await {
                    Ok(etcd) => etcd.status().await.ok().map(|status| status.leader),
                    Err(_) => None,
                },
            };
            if matches!(leader, Some(id) if id != 0 && id != self.leader_id) {
                return true;
            }
        }
        false
    }
}

pub async fn run(args: &RunArgs, progress: Arc<Progress>) -> anyhow::Result<Report> {
    let cluster = Cluster::discover(args).await?;
    anyhow::ensure!(
        args.pids.len() == cluster.nodes.len() && cluster.nodes.len() >= 3,
        "failover needs at least 3 nodes and one --pids entry per node, in the same order"
    );
    let writer_url = cluster.nodes[(cluster.leader_index + 1) % cluster.nodes.len()].clone();
    let writer = Arc::new(match args.target {
        Target::Conclave => {
            let writer = Nodes::connect(&[writer_url])?;
            Writer::Conclave(writer.client(0).clone())
        }
        Target::Etcd => Writer::Etcd(Etcd::connect(&writer_url).await?),
    });
    let mut tally = Tally::default();
    let mut sequence = 0;
    let started = Instant::now();
    steady(&writer, &mut tally, &progress, &mut sequence).await;
    anyhow::ensure!(tally.successes() > 0, "no write succeeded before the kill");

    let killed_pid = args.pids[cluster.leader_index];
    kill(killed_pid)?;
    let killed_at = Instant::now();
    eprintln!(
        "[failover] killed the leader (node {} of {:?}, pid {killed_pid})",
        cluster.leader_index + 1,
        cluster.nodes
    );
    let election = async {
        while killed_at.elapsed() < GIVE_UP {
            if cluster.new_leader_known().await {
                return Some(killed_at.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    };
    let probes = probe(&writer, killed_at, &mut tally, &progress, &mut sequence);
    let (election, first_write) = tokio::join!(election, probes);
    let first_write = first_write
        .ok_or_else(|| anyhow::anyhow!("no write acknowledged within {GIVE_UP:?} of the kill"))?;
    steady(&writer, &mut tally, &progress, &mut sequence).await;

    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let election_ms = election.map(ms);
    println!(
        "failover system={} new_leader_seen_after={} first_write_acknowledged_after={:.0}ms",
        args.target.name(),
        election_ms.map_or("never".into(), |v| format!("{v:.0}ms")),
        ms(first_write)
    );
    let mut extra = Map::new();
    extra.insert("failover_ms".into(), json!(ms(first_write)));
    extra.insert("election_ms".into(), json!(election_ms));
    extra.insert("killed_node".into(), json!(cluster.leader_index + 1));
    extra.insert("killed_pid".into(), json!(killed_pid));
    Ok(Report {
        system: args.target.name(),
        workload: "failover".into(),
        clients: 1,
        placement: "follower".into(),
        measured: tally.finish(started.elapsed()),
        extra,
    })
}

/// One write at a time for [`STEADY`].
async fn steady(writer: &Writer, tally: &mut Tally, progress: &Progress, sequence: &mut u64) {
    let started = Instant::now();
    while started.elapsed() < STEADY {
        *sequence += 1;
        let sent = Instant::now();
        let outcome = writer.write(*sequence).await;
        tally.record(sent, outcome, progress);
    }
}

/// Starts a write every [`PROBE_INTERVAL`] until one is acknowledged; returns the
/// time from `since` to that acknowledgement. Writes still in flight then are
/// abandoned (and not counted).
async fn probe(
    writer: &Arc<Writer>,
    since: Instant,
    tally: &mut Tally,
    progress: &Progress,
    sequence: &mut u64,
) -> Option<Duration> {
    let (done_sender, mut done) = tokio::sync::mpsc::unbounded_channel();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if since.elapsed() > GIVE_UP {
                    return None;
                }
                *sequence += 1;
                let (writer, done_sender, sequence) = (writer.clone(), done_sender.clone(), *sequence);
                in_flight.spawn(async move {
                    let sent = Instant::now();
                    let outcome = writer.write(sequence).await;
                    let _ = done_sender.send((sent, outcome, Instant::now()));
                });
            }
            Some((sent, outcome, answered)) = done.recv() => {
                let acknowledged = outcome.is_ok();
                tally.record(sent, outcome, progress);
                if acknowledged {
                    return Some(answered.duration_since(since));
                }
            }
        }
    }
}

fn kill(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -KILL {pid} failed");
    Ok(())
}
