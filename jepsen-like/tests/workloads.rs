//! The set, barrier and tasks workloads against real `conclave` processes: one
//! short cell each under the kill nemesis must pass with operations done and faults
//! injected, and the set workload must catch the planted stale-reads bug (proof its
//! read checker can fail on a real server).
//!
//! Uses the debug server binary (`cargo build -p conclave` first), or
//! `CONCLAVE_BINARY`.

mod common;

use jepsen_like::nemesis::Nemesis;
use jepsen_like::run::{execute, Report, RunConfig};
use jepsen_like::workloads::{CheckVerdict, Workload};

use common::{config, out_dir, SERIAL};

async fn cell(
    workload: Workload,
    nemesis: Nemesis,
    seconds: u64,
    seed: u64,
    inject_bug: Option<&str>,
) -> Report {
    let out = out_dir(&format!("test-{}", workload.name()));
    execute(RunConfig {
        inject_bug: inject_bug.map(str::to_owned),
        ..config(workload, nemesis, seconds, seed, &out)
    })
    .await
    .expect("harness")
}

/// A correct cluster passes `workload` under kills, with real work and real faults.
async fn passes_under_kills(workload: Workload, seed: u64, checks: &[&str], min_ok: u64) {
    let _serial = SERIAL.lock().await;
    let report = cell(workload, Nemesis::Kill, 12, seed, None).await;
    assert!(
        report.total().ok >= min_ok,
        "too few operations: {:?}",
        report.counts
    );
    assert!(!report.faults.is_empty(), "the nemesis never fired");
    for name in checks {
        assert_eq!(
            report.check(name),
            Some(CheckVerdict::Pass),
            "{name}: {:#?}",
            report.checks
        );
    }
    assert_eq!(report.verdict, "pass", "{:#?}", report.checks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_passes_under_kills() {
    passes_under_kills(
        Workload::Set,
        21,
        &["no-lost-element", "no-phantom", "linearizable-reads"],
        200,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_passes_under_kills() {
    passes_under_kills(
        Workload::Barrier,
        22,
        &["no-early-release", "generation-order", "consistent-outcome"],
        100,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_pass_under_kills() {
    passes_under_kills(
        Workload::Tasks,
        23,
        &[
            "no-lost-task",
            "no-phantom-task",
            "no-double-completion",
            "completed-state",
            "lease-order",
        ],
        50,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_set_read_checker_catches_planted_stale_reads() {
    let _serial = SERIAL.lock().await;
    // Paused nodes fall behind; with the bug they serve the set from that stale
    // state as soon as they resume, so a read misses acknowledged elements.
    let report = cell(Workload::Set, Nemesis::Pause, 15, 7, Some("stale-reads")).await;
    assert_eq!(
        report.check("linearizable-reads"),
        Some(CheckVerdict::Fail),
        "the set checker missed the planted bug: {:#?}",
        report.checks
    );
    assert_eq!(report.verdict, "fail");
}
