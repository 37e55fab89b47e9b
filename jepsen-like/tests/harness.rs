//! The harness against real `conclave` processes: a correct server passes under
//! kills and pauses, and a planted stale-reads bug is caught (proof the checker can
//! fail).

use std::path::PathBuf;
use std::time::Duration;

use jepsen_like::nemesis::Nemesis;
use jepsen_like::run::{execute, RunConfig};
use jepsen_like::workloads::{CheckVerdict, Workload};

/// Runs share two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn binary() -> PathBuf {
    std::env::var_os("CONCLAVE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/conclave")
        })
}

fn config(
    nemesis: Nemesis,
    seconds: u64,
    seed: u64,
    inject_bug: Option<&str>,
    out: &std::path::Path,
) -> RunConfig {
    RunConfig {
        binary: binary(),
        out: out.to_owned(),
        workload: Workload::Register,
        nemesis,
        duration: Duration::from_secs(seconds),
        seed,
        nodes: 3,
        processes: 6,
        keys: 3,
        inject_bug: inject_bug.map(str::to_owned),
        command: format!("test seed {seed}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_cluster_passes_register_under_kills_and_pauses() {
    let _serial = SERIAL.lock().await;
    for (nemesis, seed) in [(Nemesis::Kill, 11), (Nemesis::Pause, 12)] {
        let dir = tempfile_dir();
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
    let dir = tempfile_dir();
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

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "jepsen-like-test-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
