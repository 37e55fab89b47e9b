//! One run: start the cluster, run the workload with a nemesis, heal, check that the
//! replicas converge, check the history, and write the report folder.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::checker::wgl::{self, KeyResult, Verdict};
use crate::cluster::Cluster;
use crate::nemesis::{self, FaultEvent, Nemesis};
use crate::workloads::register::{self, Counts};

pub struct RunConfig {
    pub binary: PathBuf,
    pub out: PathBuf,
    pub nemesis: Nemesis,
    pub duration: Duration,
    pub seed: u64,
    pub nodes: u64,
    pub processes: usize,
    pub keys: usize,
    pub inject_bug: Option<String>,
    /// How to reproduce this run (printed in the report).
    pub command: String,
}

#[derive(Debug, Serialize)]
pub struct Convergence {
    pub converged: bool,
    pub applied_index: Vec<Option<u64>>,
    pub state_hash: Vec<Option<String>>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub verdict: String,
    pub seed: u64,
    pub reproduce: String,
    pub workload: &'static str,
    pub nemesis: Nemesis,
    pub nodes: u64,
    pub duration_s: u64,
    pub inject_bug: Option<String>,
    pub counts: Counts,
    pub faults: Vec<FaultEvent>,
    pub recovery_ms: Option<u64>,
    pub convergence: Convergence,
    pub checker: Vec<KeyResult>,
}

/// Runs one cell; `Ok(report)` whatever the verdict, `Err` only for a harness failure.
pub async fn execute(config: RunConfig) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&config.out)?;
    let mut extra = String::from(
        "[raft]\nsnapshot_logs_since_last = 100\nmax_in_snapshot_log_to_keep = 10\npurge_batch_size = 16\n",
    );
    if let Some(bug) = &config.inject_bug {
        extra.push_str(&format!("[debug]\ninject_bug = \"{bug}\"\n"));
    }
    let cluster = Cluster::start(
        &config.binary,
        &config.out.join("cluster"),
        config.nodes,
        &extra,
    )?;
    if cluster
        .agreed_leader(Duration::from_secs(30))
        .await
        .is_none()
    {
        bail!(
            "harness: the cluster elected no leader within 30 s (see {})",
            config.out.display()
        );
    }
    let urls: Vec<String> = cluster.ids().iter().map(|id| cluster.url(*id)).collect();
    let cluster = Arc::new(Mutex::new(cluster));

    let started = Instant::now();
    let until = started + config.duration;
    let settings = register::Settings {
        urls,
        processes: config.processes,
        keys: config.keys,
        seed: config.seed,
        started,
        until,
    };
    let workload = tokio::spawn(register::run(settings));
    let faults = nemesis::run(config.nemesis, cluster.clone(), config.seed, started, until).await;
    let (history, counts) = workload.await.context("workload task")?;

    let mut cluster = Arc::try_unwrap(cluster)
        .map_err(|_| anyhow::anyhow!("cluster still shared"))?
        .into_inner();
    cluster.heal()?;
    let healed = Instant::now();
    let recovery_ms = recover(&cluster)
        .await
        .then(|| healed.elapsed().as_millis() as u64);
    let convergence = converge(&cluster, Duration::from_secs(30)).await;

    let checker = wgl::check(&history, Duration::from_secs(60));
    let anomalous = checker
        .iter()
        .any(|r| matches!(r.verdict, Verdict::NotLinearizable { .. }));
    let unknown = checker
        .iter()
        .any(|r| matches!(r.verdict, Verdict::Unknown { .. }));
    let verdict = if anomalous || !convergence.converged || recovery_ms.is_none() {
        "fail"
    } else if unknown {
        "unknown"
    } else {
        "pass"
    };
    write_lines(&config.out.join("history.jsonl"), &history)?;
    write_lines(&config.out.join("faults.jsonl"), &faults)?;
    let report = Report {
        verdict: verdict.into(),
        seed: config.seed,
        reproduce: config.command,
        workload: "register",
        nemesis: config.nemesis,
        nodes: config.nodes,
        duration_s: config.duration.as_secs(),
        inject_bug: config.inject_bug,
        counts,
        faults,
        recovery_ms,
        convergence,
        checker,
    };
    std::fs::write(
        config.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    drop(cluster);
    Ok(report)
}

fn write_lines<T: Serialize>(path: &std::path::Path, items: &[T]) -> anyhow::Result<()> {
    let mut text = String::new();
    for item in items {
        text.push_str(&serde_json::to_string(item)?);
        text.push('\n');
    }
    Ok(std::fs::write(path, text)?)
}

/// After healing: a single agreed leader that acknowledges a write.
async fn recover(cluster: &Cluster) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(leader) = cluster.agreed_leader(Duration::from_secs(5)).await {
            let body = serde_json::json!({ "value": "healed" });
            let put = cluster
                .http
                .put(format!("{}/v1/kv/jepsen-healed", cluster.url(leader)))
                .json(&body);
            if put.send().await.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Every replica reaches the same applied index with the same state hash.
async fn converge(cluster: &Cluster, timeout: Duration) -> Convergence {
    let deadline = Instant::now() + timeout;
    loop {
        let mut applied_index = Vec::new();
        let mut state_hash = Vec::new();
        for id in cluster.ids() {
            let digest = cluster.get_json(id, "/v1/debug/state").await;
            applied_index.push(
                digest
                    .as_ref()
                    .and_then(|d| d["last_applied_index"].as_u64()),
            );
            state_hash.push(
                digest
                    .as_ref()
                    .and_then(|d| d["state_hash"].as_str().map(str::to_owned)),
            );
        }
        let converged = applied_index
            .iter()
            .all(|i| i.is_some() && *i == applied_index[0])
            && state_hash
                .iter()
                .all(|h| h.is_some() && *h == state_hash[0]);
        if converged || Instant::now() >= deadline {
            return Convergence {
                converged,
                applied_index,
                state_hash,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
