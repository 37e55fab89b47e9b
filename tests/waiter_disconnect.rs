//! A client that disconnects mid-wait leaves no waiter behind, whether it waited at
//! the leader (hyper drops the handler on EOF; its drop guard withdraws) or through
//! a follower (dropping the forward closes the connection to the leader, whose
//! handler is then dropped the same way). Locks, semaphores and elections alike.
//! Issue #10 ("753 waiters stayed queued").

mod common;

use std::time::Duration;

use common::{send, wait_until, Cluster, Options};
use serde_json::{json, Value};

const LEADER_WAIT: Duration = Duration::from_secs(20);
const WITHDRAW_WAIT: Duration = Duration::from_secs(10);

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    send(http.post(url).json(&body)).await
}

async fn session(http: &reqwest::Client, base: &str) -> u64 {
    let (status, body) = post(
        http,
        format!("{base}/v1/sessions"),
        json!({ "name": "locker", "capacity": 0, "ttl_ms": 60_000 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["session_id"].as_u64().unwrap()
}

/// A resource that queues waiters: its path, the holder's and a waiter's acquire
/// bodies, and the field of its GET view that lists the queue.
struct Queueing {
    path: &'static str,
    acquire: &'static str,
    body: fn(u64) -> Value,
    queue_field: &'static str,
}

const RESOURCES: [Queueing; 3] = [
    Queueing {
        path: "locks/L",
        acquire: "acquire",
        body: |session| json!({ "session_id": session }),
        queue_field: "waiters",
    },
    Queueing {
        path: "semaphores/S",
        acquire: "acquire",
        body: |session| json!({ "session_id": session, "permits": 1, "limit": 1 }),
        queue_field: "waiters",
    },
    Queueing {
        path: "elections/E",
        acquire: "campaign",
        body: |session| json!({ "session_id": session }),
        queue_field: "candidates",
    },
];

async fn queued(http: &reqwest::Client, base: &str, resource: &Queueing) -> usize {
    let (_, body) = send(http.get(format!("{base}/v1/{}", resource.path))).await;
    body[resource.queue_field].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_wait_leaves_no_waiter_at_the_leader_or_via_a_follower() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let http = common::client();
    let base = cluster.url(leader);
    for resource in &RESOURCES {
        let what = resource.path;
        let holder = session(&http, &base).await;
        let url = format!("{base}/v1/{what}/{}", resource.acquire);
        let (status, body) = post(&http, url, (resource.body)(holder)).await;
        assert_eq!(status, 200, "{what}: {body}");
        for (via, node) in [("the leader", leader), ("a follower", follower)] {
            let waiter = session(&http, &base).await;
            // Each waiting client on its own connection, dropped mid-wait.
            let own = common::client();
            let url = format!("{}/v1/{what}/{}", cluster.url(node), resource.acquire);
            let mut body = (resource.body)(waiter);
            body["wait_ms"] = json!(30_000);
            let request = tokio::spawn(async move { own.post(url).json(&body).send().await });
            let queued_once = wait_until(WITHDRAW_WAIT, || async {
                (queued(&http, &base, resource).await == 1).then_some(())
            })
            .await;
            assert!(
                queued_once.is_some(),
                "{what}: the wait via {via} never queued"
            );
            request.abort(); // the client goes away: its connection closes
            let gone = wait_until(WITHDRAW_WAIT, || async {
                (queued(&http, &base, resource).await == 0).then_some(())
            })
            .await;
            assert!(
                gone.is_some(),
                "{what}: a ghost waiter is left after a disconnect via {via}"
            );
        }
    }
}
