//! The leader clock on real `conclave` processes (issue #10, bug 6): one node's
//! wall clock jumping an hour ahead (the test-only `POST /v1/debug/clock` offset)
//! must not move cluster time an hour ahead, whether that node already leads or
//! becomes leader after a failover; sessions and locks expire on time, not early,
//! and still expire.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{acquire, send, wait_until, Cluster, Options};
use conclave_client::{Client, Consistency};
use serde_json::{json, Value};

const HOUR_MS: u64 = 60 * 60 * 1000;
const LEADER_WAIT: Duration = Duration::from_secs(20);
/// Lifetime of the session nobody keeps alive (it must live this long, then die).
const IDLE_TTL_MS: u64 = 8_000;
/// Lifetime of the session kept alive throughout (its keepalives drive the ticks
/// that advance cluster time).
const KEPT_TTL_MS: u64 = 5_000;
/// How far cluster time must be seen to advance, while the idle session's TTL still
/// runs, before the checks.
const ADVANCE_MS: u64 = 3_000;
/// Far more than any honest advance in these tests, far less than the jump.
const NO_JUMP_MS: u64 = 60_000;

fn options() -> Options {
    Options {
        extra_toml: "[debug]\nclock_offset_endpoint = true\n".into(),
        ..Options::default()
    }
}

async fn session(api: &Client, ttl_ms: u64) -> u64 {
    common::observer_session(api, "clock", ttl_ms).await
}

/// Whether session `id` is still live at the node `api` speaks to (`Ok`), gone
/// (`Err(404)`), or refused otherwise.
async fn session_live(api: &Client, id: u64) -> Result<Value, (u16, String)> {
    api.session_get(id, Consistency::Linearizable)
        .await
        .map_err(|error| common::refusal::<()>(Err(error)))
}

async fn cluster_time(cluster: &Cluster, id: u64) -> u64 {
    cluster.status(id).await.unwrap()["cluster_time_ms"]
        .as_u64()
        .unwrap()
}

/// `POST /v1/debug/clock` (test-only, not in the client): raw HTTP.
async fn set_offset(cluster: &Cluster, id: u64, offset_ms: u64) -> Value {
    let url = format!("{}/v1/debug/clock", cluster.url(id));
    let (status, body) = send(
        cluster
            .http
            .post(url)
            .json(&json!({ "offset_ms": offset_ms })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offset_ms"], offset_ms);
    body
}

/// Keeps `session` alive through any of `urls` until dropped.
struct Keeper {
    stop: Arc<AtomicBool>,
}

impl Keeper {
    fn start(urls: Vec<String>, session: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        tokio::spawn(async move {
            // One client per node, each sending once with a short timeout: a dead
            // node costs one turn, not the keeper.
            let apis = common::apis(&urls, Duration::from_secs(2));
            let mut turn = 0;
            while !flag.load(Ordering::Relaxed) {
                let api = &apis[turn % apis.len()];
                turn += 1;
                let _ = api.session_keepalive(session).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self { stop }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits until node `id` has applied cluster time `at_least_ms`; returns it.
async fn wait_cluster_time(cluster: &Cluster, id: u64, at_least_ms: u64) -> u64 {
    let reached = wait_until(Duration::from_secs(30), || async {
        let now = cluster.status(id).await?["cluster_time_ms"].as_u64()?;
        (now >= at_least_ms).then_some(now)
    })
    .await;
    reached.unwrap_or_else(|| {
        panic!(
            "cluster time did not reach {at_least_ms} on node {id}\n{}",
            cluster.logs()
        )
    })
}

/// The idle session (and the lock it holds) must still be live now, and must then
/// expire after its TTL, not before: real time between sending its create and
/// seeing it gone is at least 99 % of the TTL (the slew bound).
async fn idle_session_expires_on_time(api: &Client, idle: u64, created: Instant, lock: &str) {
    if let Err(refused) = session_live(api, idle).await {
        panic!("the idle session expired early: {refused:?}");
    }
    let held = api.lock_get(lock, Consistency::Linearizable).await.unwrap();
    assert_eq!(held["holders"][0]["session_id"], idle, "{held}");
    let gone = wait_until(Duration::from_secs(60), || async {
        let refused = session_live(api, idle).await.err()?;
        (refused.0 == 404).then_some(created.elapsed())
    })
    .await
    .expect("the idle session never expired");
    assert!(
        gone >= Duration::from_millis(IDLE_TTL_MS * 99 / 100),
        "the idle session expired after {gone:?}, before its {IDLE_TTL_MS} ms TTL"
    );
    let free = api.lock_get(lock, Consistency::Linearizable).await.unwrap();
    assert_eq!(free["holders"], json!([]), "{free}");
}

/// Issue #10 bug 6: the leader stamped its wall clock, so a leader whose clock
/// jumped an hour ahead moved cluster time an hour ahead and expired everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_s_clock_jumping_an_hour_ahead_expires_nothing_early() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, options()).await;
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    let api = cluster.api(leader);
    let kept = session(&api, KEPT_TTL_MS).await;
    let _keeper = Keeper::start(vec![cluster.url(leader)], kept);
    let created = Instant::now();
    let idle = session(&api, IDLE_TTL_MS).await;
    acquire(&api, "clock", idle).await;

    let view = set_offset(&cluster, leader, HOUR_MS).await;
    let before = cluster_time(&cluster, leader).await;
    assert!(
        view["wall_ms"].as_u64().unwrap() >= before + HOUR_MS - NO_JUMP_MS,
        "the offset did not move the leader's wall clock: {view}"
    );
    let after = wait_cluster_time(&cluster, leader, before + ADVANCE_MS).await;
    assert!(
        after - before < NO_JUMP_MS,
        "cluster time jumped by {} ms",
        after - before
    );
    idle_session_expires_on_time(&api, idle, created, "clock").await;

    if let Err(refused) = session_live(&api, kept).await {
        panic!("the kept-alive session expired: {refused:?}");
    }
    let end = cluster_time(&cluster, leader).await;
    assert!(end - before < NO_JUMP_MS, "cluster time jumped: {end}");
    assert_eq!(
        cluster.wait_for_leader(LEADER_WAIT).await,
        leader,
        "the leader changed: the test no longer shows what it means to"
    );
    assert!(
        cluster
            .log(leader)
            .contains("wall clock is ahead of cluster time"),
        "no warning about the jump in the leader's log\n{}",
        cluster.logs()
    );
}

/// The same jump on the nodes that become leader after a failover: the new leader
/// continues from the cluster time it observed, not from its wall clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_whose_clock_jumped_continues_from_the_observed_cluster_time() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3, options()).await;
    let old = cluster.wait_for_leader(LEADER_WAIT).await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let urls: Vec<String> = others.iter().map(|id| cluster.url(*id)).collect();
    let survivor = cluster.api(others[0]);
    let kept = session(&survivor, KEPT_TTL_MS).await;
    let _keeper = Keeper::start(urls.clone(), kept);
    let created = Instant::now();
    let idle = session(&survivor, IDLE_TTL_MS).await;
    acquire(&survivor, "failover", idle).await;
    for &id in &others {
        set_offset(&cluster, id, HOUR_MS).await;
    }
    let before = cluster_time(&cluster, others[0]).await;
    cluster.kill(old);
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    assert!(others.contains(&leader));
    let api = cluster.api(leader);
    let after = wait_cluster_time(&cluster, leader, before + ADVANCE_MS).await;
    assert!(
        after - before < NO_JUMP_MS,
        "cluster time jumped by {} ms at the failover",
        after - before
    );
    idle_session_expires_on_time(&api, idle, created, "failover").await;
    if let Err(refused) = session_live(&api, kept).await {
        panic!("the kept-alive session expired: {refused:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debug_clock_endpoint_is_not_found_without_the_switch() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let url = format!("{}/v1/debug/clock", cluster.url(1));
    let (status, body) = send(cluster.http.get(&url)).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let (status, body) = send(
        cluster
            .http
            .post(&url)
            .json(&json!({ "offset_ms": HOUR_MS })),
    )
    .await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    // This is a test-switches build (the test requires the feature), and it says so.
    let info = cluster.api(1).cluster_info().await.expect("cluster view");
    assert_eq!(info["test_switches"], json!(true), "{info}");
    let switches = common::metric(
        &cluster.http,
        &cluster.url(1),
        "conclave_build_test_switches",
    )
    .await;
    assert_eq!(switches, 1);
}
