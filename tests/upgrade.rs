//! A rolling upgrade from the previous format version, on real processes: three
//! nodes of the previous release (built from this repository's history by
//! `tests/upgrade/build-previous.sh`) write data and snapshots in format 7; each is
//! stopped (SIGTERM, so a leader hands over) and started again on this build, on
//! the same directory, while a background writer keeps writing. Checked: the
//! mixed cluster keeps one state (old and new nodes show the same state hash), it
//! stays in format 7 until every member runs this build, then upgrades itself to
//! format 8; every acknowledged write is readable; a node restarted on a format-8
//! snapshot reads it; the barrier written by the old release is still there.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::ops::{load, read_back, same_state, wait_exited, wait_ready, WAIT};
use common::{Cluster, Options};
use conclave_client::{BarrierWait, Consistency};
use serde_json::{json, Value};

/// The previous release's binary, built on first use (idempotent).
fn previous_binary() -> PathBuf {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/upgrade/build-previous.sh"
    );
    let output = std::process::Command::new("bash")
        .arg(script)
        .output()
        .expect("run build-previous.sh");
    assert!(
        output.status.success(),
        "building the previous release failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

async fn cluster_view(cluster: &Cluster, id: u64) -> Option<Value> {
    cluster.api(id).cluster_info().await.ok()
}

/// Stops node `id` with SIGTERM (a leader hands over first) and waits for its exit.
async fn stop(cluster: &mut Cluster, id: u64) {
    cluster.signal(id, "TERM");
    let exited = wait_exited(cluster, id).await;
    assert!(exited, "node {id} did not exit on SIGTERM");
}

/// Waits until node `id` answers `/ready` 200.
async fn ready(cluster: &Cluster, id: u64) {
    let ready = wait_ready(cluster, id).await;
    assert!(ready, "node {id} never became ready:\n{}", cluster.log(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_from_the_previous_format_keeps_every_write_and_then_upgrades() {
    let _serial = common::serial().await;
    let previous = previous_binary();
    let mut cluster = Cluster::start(
        3,
        Options {
            binary: Some(previous),
            ..Options::default()
        },
    )
    .await;
    let leader = cluster.wait_for_leader(WAIT).await;
    let view = cluster_view(&cluster, leader).await.unwrap();
    assert!(
        view.get("format").is_none(),
        "the previous release has no format field"
    );

    // Data of the previous release: keys, a released barrier (kept as a record), a
    // snapshot on every node (format-7 layout on disk), and a log tail after it.
    let api = cluster.api(leader);
    for i in 0..20 {
        api.kv_put(&format!("old/{i}"), &json!(i)).await.unwrap();
    }
    let session = common::observer_session(&api, "upgrader", 600_000).await;
    let arrive = BarrierWait {
        session_id: session,
        parties: 1,
        wait_ms: None,
    };
    let waited = api.barrier_wait("old-barrier", &arrive).await.unwrap();
    assert!(waited.released, "{waited:?}");
    for id in 1..=3 {
        cluster.api(id).snapshot().await.unwrap();
    }
    for i in 20..30 {
        api.kv_put(&format!("old/{i}"), &json!(i)).await.unwrap();
    }

    let urls = Arc::new(Mutex::new((1..=3).map(|id| cluster.url(id)).collect()));
    let mut acknowledged = Vec::new();
    for (step, id) in [1u64, 2, 3].into_iter().enumerate() {
        let halt = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(load(urls.clone(), halt.clone()));
        stop(&mut cluster, id).await;
        cluster.nodes[id as usize - 1].binary = None;
        cluster.spawn(id);
        ready(&cluster, id).await;
        let view = cluster_view(&cluster, id).await.unwrap();
        assert_eq!(view["binary_format"], 8, "node {id} runs this build");
        assert!(
            cluster
                .log(id)
                .contains("migrating the data directory to format 8"),
            "node {id} opened its format-7 directory without migrating it"
        );
        halt.store(true, Ordering::Relaxed);
        acknowledged.extend(writer.await.unwrap());
        if step < 2 {
            // Mixed: old and new nodes hold the same bytes, and nobody upgraded.
            same_state(&cluster, &[1, 2, 3]).await;
            for new in 1..=id {
                let view = cluster_view(&cluster, new).await.unwrap();
                assert_eq!(
                    view["format"], 7,
                    "node {new} upgraded with old members left"
                );
            }
        }
    }

    // Every member runs this build: the leader upgrades the cluster to format 8.
    let upgraded = common::wait_until(WAIT, || async {
        for id in 1..=3 {
            (cluster_view(&cluster, id).await?["format"] == 8).then_some(())?;
        }
        Some(())
    })
    .await;
    assert!(
        upgraded.is_some(),
        "the cluster never upgraded:\n{}",
        cluster.logs()
    );
    assert!(cluster.logs().contains("the cluster now runs format 8"));
    same_state(&cluster, &[1, 2, 3]).await;

    // A format-8 snapshot is read back by a restart.
    cluster.api(1).snapshot().await.unwrap();
    stop(&mut cluster, 1).await;
    cluster.spawn(1);
    ready(&cluster, 1).await;
    let view = cluster_view(&cluster, 1).await.unwrap();
    assert_eq!(view["format"], 8);
    same_state(&cluster, &[1, 2, 3]).await;

    // Every acknowledged write, the old keys and the old barrier are readable.
    let leader = cluster.wait_for_leader(WAIT).await;
    let api = cluster.api(leader);
    assert!(
        !acknowledged.is_empty(),
        "the writer never got a write through"
    );
    let linearizable = Consistency::default();
    read_back(&cluster, &[1, 2, 3], "load", &acknowledged).await;
    for i in 0..30 {
        let entry = api.kv_get(&format!("old/{i}"), linearizable).await.unwrap();
        assert_eq!(entry["value"], json!(i));
    }
    let barrier = api.barrier_get("old-barrier", linearizable).await;
    barrier.expect("the old release's barrier is readable");
    eprintln!(
        "rolling upgrade: {} writes acknowledged during it, all readable",
        acknowledged.len()
    );
}
