//! Conclave only, the `footprint` workload (issue 6: each node under 300 MiB with
//! 100,000 tasks and 10,000 sessions stored). `--clients` concurrent clients store
//! `--sessions` sessions (TTL 1 h, so no keepalives are needed) and then `--tasks`
//! tasks with 64-byte payloads, each requiring a capability no session offers, so
//! every task stays queued. Then it waits until every node has applied all of it
//! and reports the time taken; `main.rs` then reads each node's RSS (`--pids`).
//!
//! Every request is one op, one call of the client library on the client's node
//! (`conclave::Nodes`: one attempt, no retry); any failure (a non-2xx answer
//! included) is an error, counted by kind. `--duration` is not used: the run lasts as long as storing takes.
//! The data is left behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::cli::RunArgs;
use conclave_client::Client;

use crate::conclave::{cluster_status, kind, session, task, Nodes};
use crate::driver::{Measured, Outcome, Progress, Tally};

/// Session lifetime: well beyond the run and the RSS reading.
const TTL_MS: u64 = 3_600_000;
/// What every stored task requires and no session offers.
const UNSERVED: &str = "footprint-unserved";

pub async fn run(
    args: &RunArgs,
    nodes: &Nodes,
    all: &Nodes,
    progress: Arc<Progress>,
) -> anyhow::Result<(Measured, Map<String, Value>)> {
    let started = Instant::now();
    let mut total = Tally::default();
    // Sessions first, then tasks; each phase split over the clients.
    for phase in [Phase::Sessions, Phase::Tasks] {
        let count = match phase {
            Phase::Sessions => args.sessions,
            Phase::Tasks => args.tasks,
        };
        let phase_started = Instant::now();
        let workers: Vec<_> = (0..args.clients)
            .map(|client| {
                let (api, progress) = (nodes.client(client).clone(), progress.clone());
                let clients = args.clients;
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    for i in (client..count).step_by(clients) {
                        let sent = Instant::now();
                        let outcome = store(&api, phase, i).await;
                        tally.record(sent, outcome, &progress);
                    }
                    tally
                })
            })
            .collect();
        for worker in workers {
            total.merge(worker.await?);
        }
        eprintln!(
            "footprint: {count} {} in {:.1}s",
            phase.name(),
            phase_started.elapsed().as_secs_f64()
        );
    }
    let stored = started.elapsed();
    let caught_up = wait_applied(all).await;
    let elapsed = started.elapsed();
    let measured = total.finish(stored);
    println!(
        "footprint sessions={} tasks={} stored in {:.1}s ({:.0} requests/s), all nodes applied after {:.1}s{}, errors={}",
        args.sessions,
        args.tasks,
        stored.as_secs_f64(),
        measured.latencies_us.len() as f64 / stored.as_secs_f64().max(1e-9),
        elapsed.as_secs_f64(),
        if caught_up { "" } else { " (gave up waiting)" },
        measured.errors,
    );
    let mut extra = Map::new();
    extra.insert("sessions".into(), json!(args.sessions));
    extra.insert("tasks".into(), json!(args.tasks));
    extra.insert("stored_s".into(), json!(stored.as_secs_f64()));
    extra.insert("applied_s".into(), json!(elapsed.as_secs_f64()));
    Ok((measured, extra))
}

#[derive(Clone, Copy)]
enum Phase {
    Sessions,
    Tasks,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Sessions => "sessions",
            Phase::Tasks => "tasks",
        }
    }
}

/// Stores session or task number `i`.
async fn store(api: &Client, phase: Phase, i: usize) -> Outcome {
    let stored = match phase {
        Phase::Sessions => {
            let body = session(format!("footprint-{i}"), &["footprint"], 1, TTL_MS);
            api.session_create(&body).await.map(drop)
        }
        Phase::Tasks => {
            let body = task("footprint", json!("x".repeat(64)), vec![UNSERVED.into()]);
            api.task_submit(&body).await.map(drop)
        }
    };
    stored.map_err(kind)
}

/// Waits (30 s at most) until every node has applied the leader's last log index,
/// so that the RSS read next is of nodes holding all the data. False on giving up.
async fn wait_applied(nodes: &Nodes) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut target = None;
    while Instant::now() < deadline {
        let mut statuses = Vec::new();
        for index in 0..nodes.len() {
            statuses.push(cluster_status(nodes.client(index)).await.ok());
        }
        if target.is_none() {
            target = statuses
                .iter()
                .flatten()
                .find(|status| status["state"] == "leader")
                .and_then(|status| status["last_log_index"].as_u64());
        }
        if let Some(target) = target {
            let applied = statuses.iter().all(|status| {
                status
                    .as_ref()
                    .and_then(|status| status["last_applied_index"].as_u64())
                    .is_some_and(|index| index >= target)
            });
            if applied {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
