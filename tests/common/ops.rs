//! Helpers of the operator-workflow tests (`tests/operations.rs`,
//! `tests/operations_growth.rs`, `tests/upgrade.rs`): a background writer, membership and leader views
//! from `GET /v1/cluster`, waits for a voter set and for equal state hashes, and the
//! read-back of every acknowledged write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_client::{Client, Consistency, KvPut};
use serde_json::json;

use super::{send, Cluster};

/// How long any one condition of these tests may take to hold.
pub const WAIT: Duration = Duration::from_secs(60);

/// Writes `load/<n>` = n through the running nodes in turn until `stop`; returns
/// the acknowledged ones (a 503 or a lost answer is simply not acknowledged).
pub async fn load(urls: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) -> Vec<u64> {
    let http = super::client();
    let mut acknowledged = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let url = {
            let urls = urls.lock().unwrap();
            urls[n as usize % urls.len()].clone()
        };
        // A client of this one node that sends once: the writer picks the nodes.
        let api = Client::with_http(&url, http.clone()).unwrap();
        let options = KvPut {
            request_id: Some(format!("load-{n}")),
            ..KvPut::default()
        };
        if api
            .kv_put_with(&format!("load/{n}"), &json!(n), &options)
            .await
            .is_ok()
        {
            acknowledged.push(n);
        }
    }
    acknowledged
}

/// Reads `<prefix>/<n>` for every acknowledged `n`, linearizably, through `nodes`
/// in turn: each must hold `n`.
pub async fn read_back(cluster: &Cluster, nodes: &[u64], prefix: &str, acknowledged: &[u64]) {
    let apis: Vec<Client> = nodes.iter().map(|&id| cluster.api(id)).collect();
    for (i, n) in acknowledged.iter().enumerate() {
        let key = format!("{prefix}/{n}");
        let body = (apis[i % apis.len()]
            .kv_get(&key, Consistency::Linearizable)
            .await)
            .unwrap_or_else(|error| panic!("acknowledged write {key}: {error}"));
        assert_eq!(
            body["value"].as_u64(),
            Some(*n),
            "acknowledged write {key}: {body}"
        );
    }
}

/// The voters and learners node `id` sees.
pub async fn members(cluster: &Cluster, id: u64) -> Option<(Vec<u64>, Vec<u64>)> {
    let status = cluster.status(id).await?;
    let mut voters = Vec::new();
    let mut learners = Vec::new();
    for member in status["members"].as_array()? {
        let id = member["id"].as_u64()?;
        match member["role"].as_str()? {
            "voter" => voters.push(id),
            _ => learners.push(id),
        }
    }
    voters.sort();
    learners.sort();
    Some((voters, learners))
}

/// Waits until node `on` sees exactly `voters` and no learner.
pub async fn wait_voters(cluster: &Cluster, on: u64, voters: &[u64]) {
    let reached = super::wait_until(WAIT, || async {
        let (seen, learners) = members(cluster, on).await?;
        (seen == voters && learners.is_empty()).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "node {on} never saw voters {voters:?}: {:?}\n{}",
        members(cluster, on).await,
        cluster.logs()
    );
}

/// Waits until `nodes` have applied the same entries to the same state hash.
pub async fn same_state(cluster: &Cluster, nodes: &[u64]) {
    let equal = super::wait_until(WAIT, || async {
        let mut digests = Vec::new();
        for &id in nodes {
            // `/v1/debug/state` has no typed call: raw HTTP.
            let (status, digest) = send(
                cluster
                    .http
                    .get(format!("{}/v1/debug/state", cluster.url(id))),
            )
            .await;
            (status == 200).then_some(())?;
            digests.push((
                digest["last_applied_index"].clone(),
                digest["state_hash"].clone(),
            ));
        }
        digests
            .windows(2)
            .all(|pair| pair[0] == pair[1])
            .then_some(())
    })
    .await;
    assert!(equal.is_some(), "nodes {nodes:?} never had equal state");
}

/// The current leader as node `on` sees it.
pub async fn leader(cluster: &Cluster, on: u64) -> Option<u64> {
    cluster.status(on).await?["leader_id"].as_u64()
}

/// Waits until node `id` answers `/ready` with 200 (`ready: true`).
pub async fn wait_ready(cluster: &Cluster, id: u64) -> bool {
    let api = cluster.api(id);
    super::wait_until(WAIT, || async {
        api.ready().await.ok()?.ready.then_some(())
    })
    .await
    .is_some()
}

/// Waits until node `id`'s process has exited (after a SIGTERM).
pub async fn wait_exited(cluster: &mut Cluster, id: u64) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    while cluster.try_wait(id).is_none() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
