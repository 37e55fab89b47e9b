//! The lock and semaphore workloads against real `conclave` processes: a correct
//! server passes `lock` under pauses and `semaphore` under kills, with grants and
//! stalls past the session TTL actually happening; and `lock-unfenced` fails its
//! `fenced-resource` check (proof the checker sees overlapping critical sections)
//! while the server's own promises still hold.
//!
//! Uses the debug server binary (`cargo build -p conclave`), or `CONCLAVE_BINARY`.

mod common;

use std::path::PathBuf;

use jepsen_like::nemesis::Nemesis;
use jepsen_like::run::{execute, Report, RunConfig};
use jepsen_like::workloads::{CheckVerdict, Workload};

use common::{config, out_dir, SERIAL};

/// Runs one 15 s cell; the report folder is removed by [`done`] once the test passed
/// (a failing test leaves it for inspection).
async fn run(workload: Workload, nemesis: Nemesis, seed: u64) -> (Report, PathBuf) {
    let out = out_dir("test");
    let report = execute(RunConfig {
        keys: 2,
        ..config(workload, nemesis, 15, seed, &out)
    })
    .await
    .expect("harness");
    (report, out)
}

fn done(out: PathBuf) {
    let _ = std::fs::remove_dir_all(out);
}

/// A coverage count from a check's detail (`detail.counts.<field>`).
fn count(report: &Report, check: &str, field: &str) -> u64 {
    let check = report
        .checks
        .iter()
        .find(|c| c.name == check)
        .unwrap_or_else(|| panic!("no check {check}: {:#?}", report.checks));
    check.detail["counts"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no count {field} in {check:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_locks_pass_under_pauses_with_grants_and_stalls() {
    let _serial = SERIAL.lock().await;
    let (report, out) = run(Workload::Lock, Nemesis::Pause, 21).await;
    assert!(!report.faults.is_empty(), "the nemesis never fired");
    assert_eq!(report.verdict, "pass", "{:#?}", report.checks);
    let grants = count(&report, "fenced-resource", "grants");
    let stalls = count(&report, "fenced-resource", "stalls");
    let overtaken = count(&report, "fenced-resource", "stalls_overtaken");
    let refused = count(&report, "fenced-resource", "refused_writes")
        + count(&report, "fenced-resource", "refused_reads");
    assert!(grants >= 20, "too few grants: {grants}");
    assert!(stalls >= 1, "no critical section stalled past the TTL");
    // A stalled holder was overtaken by the next holder, and the fence refused it.
    assert!(
        overtaken >= 1,
        "no stall was overtaken: {:#?}",
        report.checks
    );
    assert!(
        refused >= overtaken,
        "{refused} refusals for {overtaken} overtaken stalls"
    );
    done(out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfenced_locks_lose_updates_and_the_checker_sees_it() {
    let _serial = SERIAL.lock().await;
    // No faults: each stall (about 1 section in 8, ~10 per run) outlives its session,
    // a waiter (three clients per lock) gets the lock and writes, and the stalled
    // client then writes its stale counter, accepted by the unfenced resource.
    let (report, out) = run(Workload::LockUnfenced, Nemesis::None, 22).await;
    let overtaken = count(&report, "fenced-resource", "stalls_overtaken");
    assert!(
        overtaken >= 1,
        "no stall was overtaken: {:#?}",
        report.checks
    );
    assert_eq!(report.verdict, "fail");
    assert_eq!(
        report.check("fenced-resource"),
        Some(CheckVerdict::Fail),
        "the checker missed the lost updates: {:#?}",
        report.checks
    );
    // The server kept its own promises: only the resource was unprotected.
    for check in ["mutual-exclusion", "token-order", "server-view", "no-leak"] {
        assert_eq!(
            report.check(check),
            Some(CheckVerdict::Pass),
            "{check}: {:#?}",
            report.checks
        );
    }
    done(out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphores_pass_under_kills_with_grants_and_stalls() {
    let _serial = SERIAL.lock().await;
    let (report, out) = run(Workload::Semaphore, Nemesis::Kill, 23).await;
    assert!(!report.faults.is_empty(), "the nemesis never fired");
    assert_eq!(report.verdict, "pass", "{:#?}", report.checks);
    let grants = count(&report, "limit", "grants");
    let stalls = count(&report, "limit", "stalls");
    assert!(grants >= 20, "too few grants: {grants}");
    assert!(stalls >= 1, "no hold stalled past the TTL");
    // The limit check had material: valid holds filled the semaphore at some instant.
    assert_eq!(
        count(&report, "limit", "peak_valid_weight"),
        3,
        "{:#?}",
        report.checks
    );
    done(out);
}
