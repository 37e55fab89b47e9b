//! The harness against real `conclave` processes: a correct server passes under
//! kills and pauses, and a planted stale-reads bug is caught (proof the checker can
//! fail).

mod common;

use jepsen_like::nemesis::Nemesis;
use jepsen_like::run::{execute, RunConfig};
use jepsen_like::workloads::{CheckVerdict, Workload};

use common::{out_dir, SERIAL};

/// A register cell.
fn config(
    nemesis: Nemesis,
    seconds: u64,
    seed: u64,
    inject_bug: Option<&str>,
    out: &std::path::Path,
) -> RunConfig {
    RunConfig {
        inject_bug: inject_bug.map(str::to_owned),
        ..common::config(Workload::Register, nemesis, seconds, seed, out)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_cluster_passes_register_under_kills_and_pauses() {
    let _serial = SERIAL.lock().await;
    for (nemesis, seed) in [(Nemesis::Kill, 11), (Nemesis::Pause, 12)] {
        let dir = out_dir("test");
        let report = execute(config(nemesis, 15, seed, None, &dir))
            .await
            .expect("harness");
        assert!(
            report.total().ok > 50,
            "too few operations: {:?}",
            report.counts
        );
        assert!(!report.faults.is_empty(), "the nemesis never fired");
        assert_eq!(report.verdict, "pass", "{nemesis:?}: {:#?}", report.checks);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planted_stale_reads_bug_is_caught() {
    let _serial = SERIAL.lock().await;
    let dir = out_dir("test");
    // Pausing nodes makes their replicas fall behind; with the bug they answer
    // linearizable reads from that stale state as soon as they resume.
    let report = execute(config(Nemesis::Pause, 20, 7, Some("stale-reads"), &dir))
        .await
        .expect("harness");
    assert_eq!(report.verdict, "fail");
    assert_eq!(
        report.check("linearizable"),
        Some(CheckVerdict::Fail),
        "the checker missed the planted bug: {:#?}",
        report.checks
    );
}
