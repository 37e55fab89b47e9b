//! Admission control (issue #11): past a bound a node answers `429` with
//! `Retry-After` at once instead of queueing, and what it refused was not applied.
//! Real processes; every wait is on a condition (a metric, a response), and no
//! assertion depends on how long anything took.

mod common;

use std::time::Duration;

use common::{metric, Cluster, Options};
use serde_json::{json, Value};

/// The status, `Retry-After` and body of a response.
async fn answer(request: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_forward_limit_a_follower_answers_429_and_forwards_nothing() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(
        3,
        Options {
            extra_toml: "[limits]\nmax_inflight_forwards = 1\n".into(),
            ..Options::default()
        },
    )
    .await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let (lead, via) = (cluster.url(leader), cluster.url(follower));
    let http = &cluster.http;
    let session = |name: &'static str| {
        let request = http
            .post(format!("{lead}/v1/sessions"))
            .json(&json!({"name": name, "capacity": 0, "ttl_ms": 60_000}));
        async move {
            let (status, body) = common::send(request).await;
            assert_eq!(status, 200, "{body}");
            body["session_id"].as_u64().unwrap()
        }
    };
    let (holder, waiter) = (session("holder").await, session("waiter").await);
    let (status, held) = common::send(
        http.post(format!("{lead}/v1/locks/gate/acquire"))
            .json(&json!({"session_id": holder})),
    )
    .await;
    assert_eq!(status, 200, "{held}");

    // One blocking acquire through the follower takes its only forwarding place.
    let blocked = tokio::spawn(common::send(
        http.post(format!("{via}/v1/locks/gate/acquire"))
            .json(&json!({"session_id": waiter, "wait_ms": 30_000})),
    ));
    let busy = common::wait_until(Duration::from_secs(10), || async {
        (metric(http, &via, "conclave_forwards_inflight").await == 1).then_some(())
    })
    .await;
    assert!(busy.is_some(), "the blocking acquire was never forwarded");

    for key in ["refused-1", "refused-2"] {
        let (status, retry_after, body) = answer(
            http.put(format!("{via}/v1/kv/{key}"))
                .json(&json!({"value": 1})),
        )
        .await;
        assert_eq!(
            (
                status,
                body["error"]["code"].as_str(),
                retry_after.as_deref()
            ),
            (429, Some("overloaded"), Some("1")),
            "{body}"
        );
        let (status, _) = common::get(http, &lead, key).await;
        assert_eq!(status, 404, "a refused write was applied");
    }
    assert!(metric(http, &via, "conclave_admission_refused_total").await >= 2);
    // The leader itself was not limited by the follower's bound.
    let (status, _) = common::put(http, &lead, "direct", json!({"value": 1})).await;
    assert_eq!(status, 200);

    // Releasing the lock ends the blocked forward, which frees the place.
    let (status, released) = common::send(
        http.post(format!("{lead}/v1/locks/gate/release"))
            .json(&json!({"session_id": holder, "fencing_token": held["fencing_token"]})),
    )
    .await;
    assert_eq!(status, 200, "{released}");
    let (status, granted) = blocked.await.unwrap();
    assert_eq!(status, 200, "{granted}");
    let free = common::wait_until(Duration::from_secs(10), || async {
        (metric(http, &via, "conclave_forwards_inflight").await == 0).then_some(())
    })
    .await;
    assert!(free.is_some());
    let (status, body) = common::put(http, &via, "admitted", json!({"value": 1})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_over_its_rate_is_refused_429_with_the_wait_and_others_are_not() {
    let _serial = common::serial().await;
    // One request per 1000 s after a burst of 3: the bucket cannot refill during
    // the test, however slowly it runs.
    let cluster = Cluster::start(
        1,
        Options {
            extra_toml: "[admission]\nrate_per_subject = 0.001\nburst_per_subject = 3\n".into(),
            ..Options::default()
        },
    )
    .await;
    let base = cluster.url(1);
    let http = reqwest::Client::new();
    let alice = common::token("alice", &["agent:kv:a/"]);
    let bob = common::token("bob", &["agent:kv:b/"]);
    let put = |token: &str, key: &str| {
        http.put(format!("{base}/v1/kv/{key}"))
            .bearer_auth(token)
            .json(&json!({"value": 1}))
    };
    // A refused (403) request is not counted against the subject.
    let (status, _, _) = answer(put(&alice, "b/not-hers")).await;
    assert_eq!(status, 403);
    for i in 0..3 {
        let (status, _, body) = answer(put(&alice, &format!("a/{i}"))).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, retry_after, body) = answer(put(&alice, "a/over")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    let wait: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!(
        wait > 100,
        "Retry-After {wait} s for a rate of 1 per 1000 s"
    );
    assert_eq!(body["error"]["retry_after_s"], json!(wait));
    let (status, _) = common::get(&cluster.http, &base, "a/over").await;
    assert_eq!(status, 404, "the refused write was applied");
    // Reads count too: alice is out.
    let (status, _, _) = answer(http.get(format!("{base}/v1/kv/a/0")).bearer_auth(&alice)).await;
    assert_eq!(status, 429);
    // Bob has his own bucket; admin has none.
    let (status, _, _) = answer(put(&bob, "b/1")).await;
    assert_eq!(status, 200);
    for i in 0..10 {
        let (status, _) = common::put(
            &cluster.http,
            &base,
            &format!("admin/{i}"),
            json!({"value": i}),
        )
        .await;
        assert_eq!(status, 200);
    }
    assert!(metric(&cluster.http, &base, "conclave_admission_refused_total").await >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_is_refused_429_and_nothing_refused_is_applied() {
    let _serial = common::serial().await;
    // One command per batch, one batch in flight, one queued: a burst of
    // concurrent writes overflows the queue.
    let cluster = Cluster::start(
        1,
        Options {
            extra_toml: "[limits]\nmax_queued_commands = 1\nmax_inflight_batches = 1\n\
                         max_batch_commands = 1\n"
                .into(),
            ..Options::default()
        },
    )
    .await;
    let base = cluster.url(1);
    let http = &cluster.http;
    let mut refused = Vec::new();
    for round in 0..20 {
        let puts = (0..64).map(|i| {
            let key = format!("r{round}-{i}");
            let request = http
                .put(format!("{base}/v1/kv/{key}"))
                .json(&json!({"value": i}));
            async move { (key, answer(request).await) }
        });
        for (key, (status, retry_after, body)) in futures_util::future::join_all(puts).await {
            match status {
                200 => {}
                429 => {
                    assert_eq!(body["error"]["code"], "overloaded", "{body}");
                    assert_eq!(retry_after.as_deref(), Some("1"));
                    refused.push(key);
                }
                other => panic!("{key}: {other} {body}"),
            }
        }
        if !refused.is_empty() {
            break;
        }
    }
    assert!(
        !refused.is_empty(),
        "20 bursts of 64 writes never overflowed a queue of 1"
    );
    for key in &refused {
        let (status, _) = common::get(http, &base, key).await;
        assert_eq!(status, 404, "{key} was refused but applied");
    }
}
