//! One run: start the cluster, run the workload with a nemesis, heal, check that the
//! replicas converge, check the history, and write the report folder.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::cluster::Cluster;
use crate::nemesis::{self, FaultEvent, Nemesis};
use crate::timeline;
use crate::workloads::{self, Check, CheckVerdict, Op, Status, Workload};

pub struct RunConfig {
    pub binary: PathBuf,
    pub out: PathBuf,
    pub workload: Workload,
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
    pub workload: Workload,
    pub nemesis: Nemesis,
    pub nodes: u64,
    pub duration_s: u64,
    pub inject_bug: Option<String>,
    /// Operations per phase: `quiet` (no fault active), `faulted` (invoked while a
    /// fault was active), `final` (after healing: final reads and resolutions), and
    /// `total`.
    pub counts: BTreeMap<String, Counts>,
    pub faults: Vec<FaultEvent>,
    pub recovery_ms: Option<u64>,
    pub convergence: Convergence,
    pub checks: Vec<Check>,
}

/// Operations of one phase by outcome.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub attempted: u64,
    pub ok: u64,
    pub fail: u64,
    pub unknown: u64,
    /// Never reached the state machine (503 / 429 / refused connection).
    pub unavailable: u64,
}

impl Report {
    pub fn total(&self) -> Counts {
        self.counts.get("total").cloned().unwrap_or_default()
    }

    /// The verdict of the check named `name`, if it ran.
    pub fn check(&self, name: &str) -> Option<CheckVerdict> {
        self.checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.verdict)
    }
}

/// Counts `ops` per phase (see [`Report::counts`]).
pub fn count_phases(ops: &[Op], faults: &[FaultEvent], until_ns: u64) -> BTreeMap<String, Counts> {
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    for op in ops {
        let invoke_ms = op.invoke_ns / 1_000_000;
        let phase = if op.invoke_ns >= until_ns {
            "final"
        } else if faults
            .iter()
            .any(|f| f.start_ms <= invoke_ms && invoke_ms <= f.end_ms)
        {
            "faulted"
        } else {
            "quiet"
        };
        for phase in [phase, "total"] {
            let c = counts.entry(phase.into()).or_default();
            c.attempted += 1;
            match op.status {
                Status::Ok => c.ok += 1,
                Status::Fail => c.fail += 1,
                Status::Unknown => c.unknown += 1,
                Status::Unavailable => c.unavailable += 1,
            }
        }
    }
    counts
}

/// Runs one cell; `Ok(report)` whatever the verdict, `Err` only for a harness failure.
pub async fn execute(config: RunConfig) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&config.out)?;
    let mut extra = String::from(
        "[raft]\nsnapshot_logs_since_last = 100\nmax_in_snapshot_log_to_keep = 10\npurge_batch_size = 16\n",
    );
    // The `clock-jump` nemesis sets a wall-clock offset through the test-only endpoint.
    extra.push_str("[debug]\nclock_offset_endpoint = true\n");
    if let Some(bug) = &config.inject_bug {
        extra.push_str(&format!("inject_bug = \"{bug}\"\n"));
    }
    let cluster = Cluster::start(
        &config.binary,
        &config.out.join("cluster"),
        config.nodes,
        config.nemesis.spares(),
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
    let (healed_tx, healed_rx) = tokio::sync::watch::channel(false);
    let context = workloads::Context {
        urls,
        processes: config.processes,
        keys: config.keys,
        seed: config.seed,
        started,
        until,
        healed: healed_rx,
    };
    let workload = tokio::spawn(workloads::run(config.workload, context));
    let faults = nemesis::run(config.nemesis, cluster.clone(), config.seed, started, until).await;
    let until_ns = started.elapsed().as_nanos() as u64;

    let mut cluster = Arc::try_unwrap(cluster)
        .map_err(|_| anyhow::anyhow!("cluster still shared"))?
        .into_inner();
    cluster.heal()?;
    let healed = Instant::now();
    let recovery_ms = recover(&cluster)
        .await
        .then(|| healed.elapsed().as_millis() as u64);
    // Final reads go ahead even if recovery failed (they then record unavailability).
    let _ = healed_tx.send(true);
    let result = workload.await.context("workload task")??;
    let convergence = converge(&cluster, Duration::from_secs(30)).await;

    let mut checks = result.checks;
    checks.push(Check::new(
        "recovery",
        if recovery_ms.is_some() {
            CheckVerdict::Pass
        } else {
            CheckVerdict::Fail
        },
        match recovery_ms {
            Some(ms) => format!("a leader acknowledged a write {ms} ms after healing"),
            None => "no leader acknowledged a write within 30 s of healing".into(),
        },
        serde_json::Value::Null,
    ));
    checks.push(Check::new(
        "convergence",
        if convergence.converged {
            CheckVerdict::Pass
        } else {
            CheckVerdict::Fail
        },
        format!(
            "applied index {:?}, same state hash: {}",
            convergence.applied_index, convergence.converged
        ),
        serde_json::Value::Null,
    ));
    let verdict = if checks.iter().any(|c| c.verdict == CheckVerdict::Fail) {
        "fail"
    } else if checks.iter().any(|c| c.verdict == CheckVerdict::Unknown) {
        "unknown"
    } else {
        "pass"
    };
    let counts = count_phases(&result.ops, &faults, until_ns);
    write_lines(&config.out.join("history.jsonl"), &result.ops)?;
    write_lines(&config.out.join("faults.jsonl"), &faults)?;
    let title = format!(
        "{} × {} — seed {}, {} nodes",
        config.workload.name(),
        config.nemesis.name(),
        config.seed,
        config.nodes
    );
    std::fs::write(
        config.out.join("timeline.svg"),
        timeline::svg(&title, &result.ops, &faults, until_ns / 1_000_000),
    )?;
    let report = Report {
        verdict: verdict.into(),
        seed: config.seed,
        reproduce: config.command,
        workload: config.workload,
        nemesis: config.nemesis,
        nodes: config.nodes,
        duration_s: config.duration.as_secs(),
        inject_bug: config.inject_bug,
        counts,
        faults,
        recovery_ms,
        convergence,
        checks,
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
