//! Locks and guards on real `conclave` processes: contention with fenced writes,
//! a paused holder's late write refused, waits that survive a leader crash.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{send, wait_until, Cluster, Options};
use serde_json::{json, Value};

const LEADER_WAIT: Duration = Duration::from_secs(20);

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    send(http.post(url).json(&body)).await
}

async fn session(http: &reqwest::Client, base: &str, ttl_ms: u64) -> u64 {
    let (status, body) = post(
        http,
        format!("{base}/v1/sessions"),
        json!({ "name": "locker", "capacity": 0, "ttl_ms": ttl_ms }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["session_id"].as_u64().unwrap()
}

/// Retries a request through transient failures (503/504/no answer) until it gets
/// a definite answer or `limit` passes.
async fn definite(
    http: &reqwest::Client,
    urls: &[String],
    path: &str,
    body: Value,
    limit: Duration,
) -> (u16, Value) {
    let deadline = Instant::now() + limit;
    let mut turn = 0;
    loop {
        turn += 1;
        let url = &urls[turn % urls.len()];
        if let Ok(response) = http.post(format!("{url}{path}")).json(&body).send().await {
            let status = response.status().as_u16();
            if status != 503 && status != 504 {
                return (status, response.json().await.unwrap_or(Value::Null));
            }
        }
        assert!(
            Instant::now() < deadline,
            "no definite answer to {path} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_contend_and_every_fenced_increment_counts_once() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let urls: Vec<String> = (1..=3).map(|id| cluster.url(id)).collect();
    let (status, _) = send(
        cluster
            .http
            .put(format!("{}/v1/kv/counter", urls[0]))
            .json(&json!({ "value": 0 })),
    )
    .await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let grants: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let mut clients = Vec::new();
    for client in 0..20 {
        let url = urls[client % 3].clone();
        let grants = grants.clone();
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
            let me = session(&http, &url, 30_000).await;
            while Instant::now() < deadline {
                let (status, granted) =
                    post(&http, format!("{url}/v1/locks/counter/acquire"), json!({ "session_id": me, "wait_ms": 5000 })).await;
                if status != 200 {
                    assert_eq!(granted["error"]["code"], "lock_held", "{granted}");
                    continue;
                }
                let token = granted["fencing_token"].as_u64().unwrap();
                let (_, current) = send(http.get(format!("{url}/v1/kv/counter"))).await;
                let next = current["value"].as_u64().unwrap() + 1;
                let guarded = json!({ "value": next, "guard": { "lock": "counter", "fencing_token": token } });
                let (status, body) = send(http.put(format!("{url}/v1/kv/counter")).json(&guarded)).await;
                assert_eq!(status, 200, "a current holder's guarded write was refused: {body}");
                grants.lock().unwrap().push((next, token));
                let (status, body) = post(
                    &http,
                    format!("{url}/v1/locks/counter/release"),
                    json!({ "session_id": me, "fencing_token": token }),
                )
                .await;
                assert_eq!(status, 200, "{body}");
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let mut grants = grants.lock().unwrap().clone();
    let (_, counter) = send(cluster.http.get(format!("{}/v1/kv/counter", urls[1]))).await;
    eprintln!("{} acquisitions by 20 clients in 10 s", grants.len());
    assert!(
        grants.len() > 20,
        "too few acquisitions to mean anything: {}",
        grants.len()
    );
    assert_eq!(
        counter["value"].as_u64().unwrap(),
        grants.len() as u64,
        "increments lost or doubled"
    );
    grants.sort();
    for pair in grants.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1,
            "each value written once: {pair:?}"
        );
        assert!(
            pair[1].1 > pair[0].1,
            "tokens must increase with each grant: {pair:?}"
        );
    }
    let (_, lock) = send(cluster.http.get(format!("{}/v1/locks/counter", urls[2]))).await;
    assert_eq!(lock["holders"], json!([]), "{lock}");
    assert_eq!(
        lock["waiters"],
        json!([]),
        "no ghost waiter is left: {lock}"
    );
}

/// The holder stops (as a paused process would: no keepalives) past its TTL; another
/// client gets the lock; when the holder resumes, its guarded write is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holders_late_guarded_write_is_refused() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let (a, b) = (cluster.url(1), cluster.url(3));
    let http = &cluster.http;
    let paused = session(http, &a, 1_000).await;
    let (_, granted) = post(
        http,
        format!("{a}/v1/locks/resource/acquire"),
        json!({ "session_id": paused }),
    )
    .await;
    let old_token = granted["fencing_token"].as_u64().unwrap();
    let write = |token: u64, value: &str| json!({ "value": value, "guard": { "lock": "resource", "fencing_token": token } });
    assert_eq!(
        send(
            http.put(format!("{a}/v1/kv/resource"))
                .json(&write(old_token, "before"))
        )
        .await
        .0,
        200
    );

    let next = session(http, &b, 30_000).await;
    let (status, granted) = post(
        http,
        format!("{b}/v1/locks/resource/acquire"),
        json!({ "session_id": next, "wait_ms": 15_000 }),
    )
    .await;
    assert_eq!(
        status, 200,
        "the lock never passed on after the holder's TTL: {granted}"
    );
    let new_token = granted["fencing_token"].as_u64().unwrap();
    assert!(new_token > old_token);

    let (status, body) = send(
        http.put(format!("{a}/v1/kv/resource"))
            .json(&write(old_token, "late")),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("stale_fencing_token")),
        "{body}"
    );
    assert_eq!(
        send(
            http.put(format!("{b}/v1/kv/resource"))
                .json(&write(new_token, "after"))
        )
        .await
        .0,
        200
    );
    let (_, value) = send(http.get(format!("{a}/v1/kv/resource"))).await;
    assert_eq!(value["value"], "after");
    // Any mutating request can be fenced, not only KV: a task submission here.
    let task = |token: u64| json!({ "kind": "k", "guard": { "lock": "resource", "fencing_token": token } });
    let (status, body) = post(http, format!("{a}/v1/tasks"), task(old_token)).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("stale_fencing_token")),
        "{body}"
    );
    assert_eq!(body["error"]["current_token"], new_token);
    assert_eq!(
        post(http, format!("{b}/v1/tasks"), task(new_token)).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_crash_during_waits_loses_no_waiter_and_no_grant() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3, Options::default()).await;
    let urls: Vec<String> = (1..=3).map(|id| cluster.url(id)).collect();
    let http = cluster.http.clone();
    let holder = session(&http, &urls[0], 60_000).await;
    let (_, granted) = post(
        &http,
        format!("{}/v1/locks/baton/acquire", urls[0]),
        json!({ "session_id": holder }),
    )
    .await;
    let holder_token = granted["fencing_token"].as_u64().unwrap();

    // Five waiters through every node; each retries its acquire through the crash
    // (a retry resumes its queued waiter) and passes the baton on when granted.
    let grants: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let mut waiters = Vec::new();
    for _ in 0..5 {
        let me = session(&http, &urls[1], 60_000).await;
        let (urls, grants) = (urls.clone(), grants.clone());
        waiters.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let request = json!({ "session_id": me, "wait_ms": 20_000 });
            let (status, body) = definite(
                &http,
                &urls,
                "/v1/locks/baton/acquire",
                request,
                Duration::from_secs(60),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let token = body["fencing_token"].as_u64().unwrap();
            grants.lock().unwrap().push((me, token));
            let release = json!({ "session_id": me, "fencing_token": token });
            let (status, body) = definite(
                &http,
                &urls,
                "/v1/locks/baton/release",
                release,
                Duration::from_secs(60),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }));
    }
    let queued = wait_until(Duration::from_secs(10), || async {
        let (_, lock) = send(http.get(format!("{}/v1/locks/baton", urls[0]))).await;
        (lock["waiters"].as_array()?.len() == 5).then_some(())
    })
    .await;
    assert!(queued.is_some(), "the five waiters never queued");
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    cluster.kill(leader);
    let survivors: Vec<String> = cluster
        .running()
        .iter()
        .map(|id| cluster.url(*id))
        .collect();
    let release = json!({ "session_id": holder, "fencing_token": holder_token });
    let (status, body) = definite(
        &http,
        &survivors,
        "/v1/locks/baton/release",
        release,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for waiter in waiters {
        waiter.await.unwrap();
    }
    let grants = grants.lock().unwrap().clone();
    let sessions: std::collections::BTreeSet<u64> = grants.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        sessions.len(),
        5,
        "every waiter granted exactly once: {grants:?}"
    );
    let mut tokens: Vec<u64> = grants.iter().map(|(_, t)| *t).collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 5, "each grant its own token: {grants:?}");
    assert!(tokens[0] > holder_token);
    let (_, lock) = send(http.get(format!("{}/v1/locks/baton", survivors[0]))).await;
    assert_eq!(
        (lock["holders"].clone(), lock["waiters"].clone()),
        (json!([]), json!([])),
        "{lock}"
    );
}
