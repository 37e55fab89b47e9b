//! The leader clock on real `conclave` processes (issue #10, bug 6): one node's
//! wall clock jumping an hour ahead (the test-only `POST /v1/debug/clock` offset)
//! must not move cluster time an hour ahead, whether that node already leads or
//! becomes leader after a failover; sessions and locks expire on time, not early,
//! and still expire.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{send, wait_until, Cluster, Options};
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

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    send(http.post(url).json(&body)).await
}

async fn session(http: &reqwest::Client, base: &str, ttl_ms: u64) -> u64 {
    let (status, body) = post(
        http,
        format!("{base}/v1/sessions"),
        json!({ "name": "clock", "capacity": 0, "ttl_ms": ttl_ms }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["session_id"].as_u64().unwrap()
}

async fn session_status(http: &reqwest::Client, base: &str, id: u64) -> (u16, Value) {
    send(http.get(format!("{base}/v1/sessions/{id}"))).await
}

async fn cluster_time(cluster: &Cluster, id: u64) -> u64 {
    cluster.status(id).await.unwrap()["cluster_time_ms"]
        .as_u64()
        .unwrap()
}

async fn set_offset(cluster: &Cluster, id: u64, offset_ms: u64) -> Value {
    let (status, body) = post(
        &cluster.http,
        format!("{}/v1/debug/clock", cluster.url(id)),
        json!({ "offset_ms": offset_ms }),
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
            let http = common::client_builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let mut turn = 0;
            while !flag.load(Ordering::Relaxed) {
                let url = &urls[turn % urls.len()];
                turn += 1;
                let _ = http
                    .post(format!("{url}/v1/sessions/{session}/keepalive"))
                    .send()
                    .await;
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
async fn idle_session_expires_on_time(
    cluster: &Cluster,
    base: &str,
    idle: u64,
    created: Instant,
    lock: &str,
) {
    let (status, body) = session_status(&cluster.http, base, idle).await;
    assert_eq!(status, 200, "the idle session expired early: {body}");
    let (_, held) = send(cluster.http.get(format!("{base}/v1/locks/{lock}"))).await;
    assert_eq!(held["holders"][0]["session_id"], idle, "{held}");
    let gone = wait_until(Duration::from_secs(60), || async {
        let (status, _) = session_status(&cluster.http, base, idle).await;
        (status == 404).then_some(created.elapsed())
    })
    .await
    .expect("the idle session never expired");
    assert!(
        gone >= Duration::from_millis(IDLE_TTL_MS * 99 / 100),
        "the idle session expired after {gone:?}, before its {IDLE_TTL_MS} ms TTL"
    );
    let (_, free) = send(cluster.http.get(format!("{base}/v1/locks/{lock}"))).await;
    assert_eq!(free["holders"], json!([]), "{free}");
}

/// Issue #10 bug 6: the leader stamped its wall clock, so a leader whose clock
/// jumped an hour ahead moved cluster time an hour ahead and expired everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_s_clock_jumping_an_hour_ahead_expires_nothing_early() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, options()).await;
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    let base = cluster.url(leader);
    let kept = session(&cluster.http, &base, KEPT_TTL_MS).await;
    let _keeper = Keeper::start(vec![base.clone()], kept);
    let created = Instant::now();
    let idle = session(&cluster.http, &base, IDLE_TTL_MS).await;
    let (status, body) = post(
        &cluster.http,
        format!("{base}/v1/locks/clock/acquire"),
        json!({ "session_id": idle }),
    )
    .await;
    assert_eq!(status, 200, "{body}");

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
    idle_session_expires_on_time(&cluster, &base, idle, created, "clock").await;

    let (status, body) = session_status(&cluster.http, &base, kept).await;
    assert_eq!(status, 200, "the kept-alive session expired: {body}");
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
    let kept = session(&cluster.http, &urls[0], KEPT_TTL_MS).await;
    let _keeper = Keeper::start(urls.clone(), kept);
    let created = Instant::now();
    let idle = session(&cluster.http, &urls[0], IDLE_TTL_MS).await;
    let (status, body) = post(
        &cluster.http,
        format!("{}/v1/locks/failover/acquire", urls[0]),
        json!({ "session_id": idle }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for &id in &others {
        set_offset(&cluster, id, HOUR_MS).await;
    }
    let before = cluster_time(&cluster, others[0]).await;
    cluster.kill(old);
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    assert!(others.contains(&leader));
    let base = cluster.url(leader);
    let after = wait_cluster_time(&cluster, leader, before + ADVANCE_MS).await;
    assert!(
        after - before < NO_JUMP_MS,
        "cluster time jumped by {} ms at the failover",
        after - before
    );
    idle_session_expires_on_time(&cluster, &base, idle, created, "failover").await;
    let (status, body) = session_status(&cluster.http, &base, kept).await;
    assert_eq!(status, 200, "the kept-alive session expired: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debug_clock_endpoint_is_not_found_without_the_switch() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let url = format!("{}/v1/debug/clock", cluster.url(1));
    let (status, body) = send(cluster.http.get(&url)).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let (status, body) = post(&cluster.http, url, json!({ "offset_ms": HOUR_MS })).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    // This is a test-switches build (the test requires the feature), and it says so.
    let (status, info) = send(cluster.http.get(format!("{}/v1/cluster", cluster.url(1)))).await;
    assert_eq!(
        (status, &info["test_switches"]),
        (200, &json!(true)),
        "{info}"
    );
    let switches = common::metric(
        &cluster.http,
        &cluster.url(1),
        "conclave_build_test_switches",
    )
    .await;
    assert_eq!(switches, 1);
}
