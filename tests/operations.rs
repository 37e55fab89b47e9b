//! Operator workflows on real `conclave` processes with auth on, under a steady
//! write load: leadership handed over on request, on SIGTERM and before the leader
//! is removed; a rolling restart of every node, one at a time, with a client that
//! retries by the 503/504 contract and sees every acknowledged write at the end
//! (each node's unavailability window is printed, not asserted). Growing,
//! shrinking, replacing, backup/restore and export/replay are one sequential
//! lifecycle in `tests/operations_growth.rs`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ops::{leader, load, read_back, same_state, wait_exited, wait_ready, WAIT};
use common::{refusal, send, Cluster, Options};
use conclave_client::{Consistency, Error, KvPut};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_is_handed_over_on_request_on_sigterm_and_before_the_leader_is_removed() {
    let _serial = common::serial().await;
    let options = Options {
        extra_toml: "min_voters = 2\n".into(),
        ..Options::default()
    };
    let mut cluster = Cluster::start(3, options).await;

    // 0. An idle leader hands over too (no write in flight to wait for: the
    // proposer held a permit while idle, and the transfer waited for a write).
    let idle = cluster.wait_for_leader(WAIT).await;
    let body = (cluster.api(idle).leader_transfer(None).await)
        .unwrap_or_else(|error| panic!("an idle leader's transfer: {error}"));
    assert_ne!(body["leader_id"].as_u64(), Some(idle), "{body}");

    let urls = Arc::new(Mutex::new(
        (1..=3).map(|id| cluster.url(id)).collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(load(urls.clone(), stop.clone()));

    // 1. To the most caught-up other voter, asked through a follower.
    let first = cluster.wait_for_leader(WAIT).await;
    let follower = (1..=3).find(|&id| id != first).unwrap();
    let api = cluster.api(follower);
    let body = api.leader_transfer(None).await.expect("handed over");
    let second = body["leader_id"].as_u64().unwrap();
    assert_ne!(second, first, "{body}");
    // 2. To a named voter.
    let target = (1..=3).find(|&id| id != second).unwrap();
    let body = api
        .leader_transfer(Some(target))
        .await
        .expect("handed over");
    assert_eq!(body["leader_id"].as_u64(), Some(target), "{body}");
    // Not a member: 404; itself: 409.
    assert_eq!(refusal(api.leader_transfer(Some(9)).await).0, 404);
    assert_eq!(refusal(api.leader_transfer(Some(target)).await).0, 409);

    // 3. SIGTERM on the leader: it hands over before it exits.
    cluster.signal(target, "TERM");
    let other = (1..=3).find(|&id| id != target).unwrap();
    let exited = common::wait_until(WAIT, || async {
        leader(&cluster, other).await.filter(|&l| l != target)
    })
    .await;
    assert!(
        exited.is_some(),
        "a new leader after SIGTERM\n{}",
        cluster.logs()
    );
    let handed = common::wait_until(WAIT, || async {
        cluster
            .log(target)
            .contains("stopping: handed leadership over")
            .then_some(())
    })
    .await;
    assert!(handed.is_some(), "{}", cluster.log(target));
    assert!(
        wait_exited(&mut cluster, target).await,
        "the TERMed node exits"
    );
    cluster.spawn(target);
    cluster.wait_for_leader(WAIT).await;

    // 4. Removing the leader: it hands over first, then the new leader removes it.
    let old = cluster.wait_for_leader(WAIT).await;
    let via = (1..=3).find(|&id| id != old).unwrap();
    let body = cluster.api(via).member_remove(old).await.expect("removed");
    let new = body["leader_id"].as_u64().unwrap();
    assert_ne!(new, old, "{body}");
    let listed = body["members"].as_array().unwrap();
    assert!(listed.iter().all(|m| m["id"] != old), "{body}");
    urls.lock().unwrap().retain(|url| *url != cluster.url(old));
    assert!(
        cluster.log(old).contains("handed leadership over"),
        "{}",
        cluster.log(old)
    );
    let said = common::wait_until(WAIT, || async {
        cluster
            .log(old)
            .contains("this node was removed from the cluster")
            .then_some(())
    })
    .await;
    assert!(said.is_some(), "the removed node says so");
    // Raw: the client's `Ready` has no `member` field.
    let (status, ready) = send(cluster.http.get(format!("{}/ready", cluster.url(old)))).await;
    assert_eq!((status, &ready["member"]), (503, &json!(false)), "{ready}");
    // min_voters = 2: the next removal is refused.
    assert_eq!(
        refusal(cluster.api(new).member_remove(via).await),
        (409, "below_min_voters".to_owned())
    );

    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await.unwrap();
    assert!(
        acknowledged.len() >= 5,
        "the load ran: {}",
        acknowledged.len()
    );
    let alive: Vec<u64> = (1..=3).filter(|&id| id != old).collect();
    read_back(&cluster, &alive, "load", &acknowledged).await;
}

/// What one retrying client saw.
#[derive(Default)]
struct Retried {
    /// Every write it was told was applied (`200`, or a lookup showing it applied).
    acknowledged: Vec<u64>,
    /// `503` / `429` answers: definitely not applied, retried.
    unavailable: u64,
    /// `504` answers: outcome unknown, resolved by lookup or same-id retry.
    indeterminate: u64,
    /// Refused connections (not applied) and lost answers (maybe applied).
    transport: u64,
    /// Unknown outcomes that `GET /v1/requests/{request_id}` showed applied.
    resolved_by_lookup: u64,
    /// The longest span from the first failed attempt of a write to its success.
    longest_failing: Duration,
}

/// A client that writes `<prefix>/<n>` = n, one write at a time, through the nodes
/// in turn, and retries each write until it is acknowledged, by the contract of
/// docs/api.md: after a `503`/`429` or a refused connection (not applied) it sends
/// the same request to the next node; after a `504` or a lost answer (maybe
/// applied) it first asks `GET /v1/requests/{request_id}` and takes an applied
/// `200` as the acknowledgement, else sends the write again with the same
/// `request_id` (applied at most once). A write still failing after `WAIT` fails
/// the test; a `4xx` other than `429` too. Counts its acknowledgements in `acks`.
async fn retrying_writer(
    prefix: String,
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
) -> Retried {
    // One client per node, each sending once: the retries are this writer's own.
    let apis = common::apis(&urls, Duration::from_secs(15));
    let mut seen = Retried::default();
    let mut node = 0usize;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let request_id = format!("{prefix}-{n}");
        let key = format!("{prefix}/{n}");
        let options = KvPut {
            request_id: Some(request_id.clone()),
            ..KvPut::default()
        };
        let mut maybe_applied = false;
        let mut failing_since: Option<Instant> = None;
        loop {
            let api = &apis[node % apis.len()];
            let attempt = Instant::now();
            if maybe_applied {
                if let Ok(found) = api
                    .request_get(&request_id, Consistency::Linearizable)
                    .await
                {
                    if found["applied"] == true {
                        assert_eq!(found["result"]["status"], 200, "{found}");
                        seen.resolved_by_lookup += 1;
                        break;
                    }
                }
            }
            match api.kv_put_with(&key, &json!(n), &options).await {
                Ok(_) => break,
                Err(Error::Transport(e)) => {
                    seen.transport += 1;
                    maybe_applied |= !e.is_connect();
                }
                Err(error) => match error.status() {
                    Some(503 | 429) => seen.unavailable += 1,
                    Some(504) => {
                        seen.indeterminate += 1;
                        maybe_applied = true;
                    }
                    _ => panic!("write {key}: {error}"),
                },
            }
            let since = *failing_since.get_or_insert(attempt);
            assert!(
                since.elapsed() < WAIT,
                "write {prefix}/{n} still failing after {WAIT:?}"
            );
            node += 1;
            // The client's retry back-off, not a synchronization.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(since) = failing_since {
            seen.longest_failing = seen.longest_failing.max(since.elapsed());
        }
        seen.acknowledged.push(n);
        acks.fetch_add(1, Ordering::Relaxed);
        node += 1;
    }
    seen
}

/// Waits until the clients have had 20 more writes acknowledged.
async fn progress(cluster: &Cluster, acks: &AtomicU64) {
    let from = acks.load(Ordering::Relaxed);
    let more = common::wait_until(WAIT, || async {
        (acks.load(Ordering::Relaxed) >= from + 20).then_some(())
    })
    .await;
    assert!(more.is_some(), "the writers write\n{}", cluster.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_with_leader_handover_loses_no_acknowledged_write() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3, Options::default()).await;
    let urls: Vec<String> = (1..=3).map(|id| cluster.url(id)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (urls, stop, acks) = (urls.clone(), stop.clone(), acks.clone());
            tokio::spawn(retrying_writer(format!("roll{w}"), urls, stop, acks))
        })
        .collect();
    progress(&cluster, &acks).await;

    // One node at a time, followers first and the leader last (docs/operations.md):
    // SIGTERM, wait for the exit, restart, wait for `/ready`. Should leadership have
    // moved onto a node already restarted, the leader is restarted once more, so a
    // leader's handover on SIGTERM is always part of the run.
    let handed = "stopping: handed leadership over";
    let mut restarted = std::collections::BTreeSet::new();
    let mut leader_restarts = 0;
    let mut windows = Vec::new();
    while restarted.len() < 3 || leader_restarts == 0 {
        assert!(windows.len() < 6, "restarts never reached the leader");
        let current = cluster.wait_for_leader(WAIT).await;
        let id = (1..=3)
            .find(|id| !restarted.contains(id) && *id != current)
            .unwrap_or(current);
        let was_leader = leader(&cluster, id).await == Some(id);
        let handovers = cluster.log(id).matches(handed).count();
        let sigterm = Instant::now();
        cluster.signal(id, "TERM");
        assert!(
            wait_exited(&mut cluster, id).await,
            "node {id} exits on SIGTERM\n{}",
            cluster.log(id)
        );
        let exited = sigterm.elapsed();
        if was_leader {
            assert!(
                cluster.log(id).matches(handed).count() > handovers,
                "the leader handed over before it stopped\n{}",
                cluster.log(id)
            );
            leader_restarts += 1;
        }
        cluster.spawn(id);
        assert!(
            wait_ready(&cluster, id).await,
            "node {id} is ready again\n{}",
            cluster.logs()
        );
        windows.push((id, was_leader, exited, sigterm.elapsed()));
        restarted.insert(id);
        progress(&cluster, &acks).await;
    }

    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for writer in writers {
        seen.push(writer.await.unwrap());
    }
    for (id, was_leader, exited, ready) in &windows {
        let role = if *was_leader { "leader" } else { "follower" };
        eprintln!(
            "rolling restart: node {id} ({role}): exited {} ms after SIGTERM, /ready 200 again {} ms after SIGTERM",
            exited.as_millis(),
            ready.as_millis()
        );
    }
    for (w, s) in seen.iter().enumerate() {
        eprintln!(
            "rolling restart: writer {w}: {} writes acknowledged ({} by lookup), {} x 503/429, {} x 504, {} transport errors; longest window of failing writes {} ms",
            s.acknowledged.len(),
            s.resolved_by_lookup,
            s.unavailable,
            s.indeterminate,
            s.transport,
            s.longest_failing.as_millis()
        );
    }
    for (w, s) in seen.iter().enumerate() {
        assert!(s.acknowledged.len() >= 10, "writer {w} ran");
        read_back(&cluster, &[1, 2, 3], &format!("roll{w}"), &s.acknowledged).await;
    }
    same_state(&cluster, &[1, 2, 3]).await;
}
