//! Proposals and two-phase commit on three real `conclave` processes with auth on:
//! each participant and voter uses its own token (its subject is its name) and talks
//! to its own node. Waits are the API's own `wait_ms` or condition polls, never
//! fixed sleeps.

mod common;

use std::time::Duration;

use common::{send, Cluster, Options};
use serde_json::{json, Value};

/// A client whose every request carries `subject`'s token with `scopes`.
fn client_of(subject: &str, scopes: &[&str]) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", common::token(subject, scopes));
    headers.insert(reqwest::header::AUTHORIZATION, bearer.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    send(http.post(url).json(&body)).await
}

/// A transaction's view once decided (waiting on the server), from `base`.
async fn decided(http: &reqwest::Client, base: &str, id: u64) -> Value {
    let (status, view) = send(http.get(format!("{base}/v1/2pc/{id}?wait_ms=20000"))).await;
    assert_eq!(status, 200, "{view}");
    assert_ne!(
        view["state"], "preparing",
        "not decided within the wait: {view}"
    );
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_commit_aborts_on_one_abort_and_on_silence_and_survives_a_leader_kill() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3, Options::default()).await;
    let names = ["p1", "p2", "p3", "p4", "p5"];
    let clients: Vec<reqwest::Client> = names
        .iter()
        .map(|name| client_of(name, &["agent:txn"]))
        .collect();
    let urls: Vec<String> = (1..=3).map(|n| cluster.url(n)).collect();
    let url = |i: usize| urls[i % 3].clone();
    let coordinator = client_of("coordinator", &["agent:txn"]);

    // 1. Five participants; the fourth votes abort: everyone observes `aborted`.
    let (status, created) = post(
        &coordinator,
        format!("{}/v1/2pc", url(0)),
        json!({"participants": names, "timeout_ms": 60_000, "payload": {"step": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_u64().unwrap();
    for (i, http) in clients.iter().enumerate() {
        let vote = if i == 3 { "abort" } else { "commit" };
        let (status, body) = post(
            http,
            format!("{}/v1/2pc/{id}/vote", url(i)),
            json!({"participant": names[i], "vote": vote}),
        )
        .await;
        if i <= 3 {
            assert_eq!(status, 200, "{} voting: {body}", names[i]);
        } else {
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (409, Some("transaction_decided")),
                "{body}"
            );
        }
    }
    for (i, http) in clients.iter().enumerate() {
        let view = decided(http, &url(i), id).await;
        assert_eq!(
            (view["state"].as_str(), view["reason"].as_str()),
            (Some("aborted"), Some("vote")),
            "{view}"
        );
    }
    // Nobody votes as another: p1's token cannot cast p2's vote (nor change its own).
    let (status, body) = post(
        &clients[0],
        format!("{}/v1/2pc/{id}/vote", url(1)),
        json!({"participant": "p2", "vote": "abort"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("not_the_party")),
        "{body}"
    );
    let (status, body) = post(
        &clients[0],
        format!("{}/v1/2pc/{id}/vote", url(0)),
        json!({"participant": "p1", "vote": "abort"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_voted")),
        "{body}"
    );
    // Each finds the decision awaiting its ack, acks, and the record goes with the last.
    for (i, http) in clients.iter().enumerate() {
        let base = url(i);
        let query = format!(
            "{base}/v1/2pc?participant={}&awaiting=true&wait_ms=5000",
            names[i]
        );
        let (status, page) = send(http.get(query)).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["items"][0]["id"], id, "{page}");
        let (status, body) = post(
            http,
            format!("{base}/v1/2pc/{id}/ack"),
            json!({"participant": names[i]}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["removed"], i == 4, "{body}");
    }
    let (status, _) = send(coordinator.get(format!("{}/v1/2pc/{id}", url(2)))).await;
    assert_eq!(status, 404, "removed once all acked");

    // 2. One participant stays silent: `aborted` at the timeout, by the replicated tick.
    let (_, created) = post(
        &coordinator,
        format!("{}/v1/2pc", url(1)),
        json!({"participants": ["p1", "p2"], "timeout_ms": 1_500}),
    )
    .await;
    let silent = created["id"].as_u64().unwrap();
    let (status, _) = post(
        &clients[0],
        format!("{}/v1/2pc/{silent}/vote", url(0)),
        json!({"participant": "p1", "vote": "commit"}),
    )
    .await;
    assert_eq!(status, 200);
    let view = decided(&clients[0], &url(2), silent).await;
    assert_eq!(
        (view["state"].as_str(), view["reason"].as_str()),
        (Some("aborted"), Some("timeout")),
        "{view}"
    );
    assert_eq!(view["votes"], json!({"p1": "commit"}));

    // 3. The leader is SIGKILLed between votes: the decision is reached once and every
    // participant (the restarted node too) sees the same one.
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    let base = |n: u64| urls[n as usize - 1].clone();
    let (_, created) = post(
        &coordinator,
        format!("{}/v1/2pc", base(others[0])),
        json!({"participants": ["p1", "p2", "p3"], "timeout_ms": 60_000}),
    )
    .await;
    let across = created["id"].as_u64().unwrap();
    for (i, name) in ["p1", "p2"].iter().enumerate() {
        let (status, body) = post(
            &clients[i],
            format!("{}/v1/2pc/{across}/vote", base(others[i % 2])),
            json!({"participant": name, "vote": "commit"}),
        )
        .await;
        assert_eq!(
            (status, body["state"].as_str()),
            (200, Some("preparing")),
            "{body}"
        );
    }
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader);
    // p2's retry of its own vote across the failover is answered, not counted twice.
    let (status, body) = post(
        &clients[1],
        format!("{}/v1/2pc/{across}/vote", base(others[1])),
        json!({"participant": "p2", "vote": "commit"}),
    )
    .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("preparing")),
        "{body}"
    );
    let (status, body) = post(
        &clients[2],
        format!("{}/v1/2pc/{across}/vote", base(others[0])),
        json!({"participant": "p3", "vote": "commit"}),
    )
    .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("committed")),
        "{body}"
    );
    cluster.spawn(leader);
    let mut seen = Vec::new();
    for (i, node) in [others[0], others[1], leader].into_iter().enumerate() {
        // The restarted node serves a stale read once it has caught up.
        let view = common::wait_until(Duration::from_secs(20), || async {
            let url = format!("{}/v1/2pc/{across}?consistency=stale", base(node));
            // Until the restarted node listens again, its connection is refused.
            let response = clients[i].get(url).send().await.ok()?;
            let ok = response.status() == 200;
            let view: Value = response.json().await.ok()?;
            (ok && view["state"] != "preparing").then_some(view)
        })
        .await
        .unwrap_or_else(|| panic!("node {node} never saw the decision\n{}", cluster.logs()));
        seen.push((
            view["state"].clone(),
            view["decided_at_index"].clone(),
            view["ballots"].clone(),
        ));
    }
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
    assert_eq!(seen[0].0, "committed");
    assert_eq!(
        seen[0].2.as_array().unwrap().len(),
        3,
        "three ballots, none twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_decide_early_wake_their_waiters_and_count_a_dead_session_as_abstaining() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let planner = client_of("planner", &["agent:proposals"]);
    let alice = client_of("alice", &["agent:proposals"]);
    let bob = client_of("bob", &["agent:proposals"]);
    let reader = client_of("auditor", &["read"]);
    let (status, created) = post(
        &planner,
        format!("{}/v1/proposals", cluster.url(1)),
        json!({"title": "deploy 1.2", "payload": {"release": "1.2"}, "voters": ["alice", "bob", "carol"],
               "rule": {"threshold": 2}, "deadline_ms": 60_000}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["proposal_id"].as_u64().unwrap();
    // A waiter on another node is woken by the deciding vote.
    let waiter = {
        let (http, url) = (
            reader.clone(),
            format!("{}/v1/proposals/{id}?wait_ms=30000", cluster.url(3)),
        );
        tokio::spawn(async move { send(http.get(url)).await })
    };
    let (status, page) = send(alice.get(format!(
        "{}/v1/proposals?voter=alice&awaiting=true",
        cluster.url(2)
    )))
    .await;
    assert_eq!(
        (status, page["items"][0]["proposal_id"].as_u64()),
        (200, Some(id)),
        "{page}"
    );
    let vote = |http: &reqwest::Client, node: u64, voter: &str, vote: &str| {
        let (http, url) = (
            http.clone(),
            format!("{}/v1/proposals/{id}/votes", cluster.url(node)),
        );
        let body = json!({"voter": voter, "vote": vote});
        async move { post(&http, url, body).await }
    };
    let (status, body) = vote(&alice, 2, "bob", "yes").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("not_the_party")),
        "{body}"
    );
    let (status, body) = vote(&alice, 2, "mallory", "yes").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("not_a_voter")),
        "{body}"
    );
    let (status, body) = vote(&alice, 2, "alice", "yes").await;
    assert_eq!(
        (
            status,
            body["state"].as_str(),
            body["tally"]["yes"].as_u64()
        ),
        (200, Some("open"), Some(1)),
        "{body}"
    );
    let (status, body) = vote(&alice, 1, "alice", "yes").await;
    assert_eq!(
        (status, body["tally"]["yes"].as_u64()),
        (200, Some(1)),
        "the same vote again: {body}"
    );
    let (status, body) = vote(&alice, 1, "alice", "no").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_voted")),
        "{body}"
    );
    let (status, body) = vote(&bob, 3, "bob", "yes").await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("accepted")),
        "2 of 3 accepts: {body}"
    );
    let (status, view) = waiter.await.unwrap();
    assert_eq!(
        (status, view["state"].as_str()),
        (200, Some("accepted")),
        "{view}"
    );
    let votes = view["tally"]["votes"].as_array().unwrap();
    let voters: Vec<(&str, &str)> = votes
        .iter()
        .map(|v| (v["voter"].as_str().unwrap(), v["cast_by"].as_str().unwrap()))
        .collect();
    assert_eq!(voters, vec![("alice", "alice"), ("bob", "bob")]);
    assert_eq!(view["decided_at_index"], votes[1]["index"]);
    let (status, body) = post(
        &planner,
        format!("{}/v1/proposals/{id}/votes", cluster.url(1)),
        json!({"voter": "carol", "vote": "no"}),
    )
    .await;
    assert_eq!(status, 403, "the planner is not carol: {body}");

    // Session voters: one session ends before voting; it abstains and the unanimous
    // proposal is accepted at once instead of waiting for its deadline.
    let agent = |name: &str| client_of(name, &["agent:proposals"]);
    let (one, two) = (agent("agent-1"), agent("agent-2"));
    let mut sessions = Vec::new();
    for http in [&one, &two] {
        let (status, body) = post(
            http,
            format!("{}/v1/sessions", cluster.url(1)),
            json!({"name": "voter", "ttl_ms": 60_000}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        sessions.push(body["session_id"].as_u64().unwrap());
    }
    let (status, created) = post(
        &planner,
        format!("{}/v1/proposals", cluster.url(2)),
        json!({"title": "all agree?", "voters": sessions, "voters_are_sessions": true,
               "rule": "unanimous", "deadline_ms": 600_000}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let unanimous = created["proposal_id"].as_u64().unwrap();
    let (status, body) = post(
        &two,
        format!("{}/v1/proposals/{unanimous}/votes", cluster.url(3)),
        json!({"voter": sessions[0], "vote": "yes"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("not_session_owner")),
        "{body}"
    );
    let (status, body) = post(
        &one,
        format!("{}/v1/proposals/{unanimous}/votes", cluster.url(3)),
        json!({"voter": sessions[0], "vote": "yes"}),
    )
    .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("open")),
        "{body}"
    );
    let (status, _) =
        send(two.delete(format!("{}/v1/sessions/{}", cluster.url(2), sessions[1]))).await;
    assert_eq!(status, 200);
    let (status, view) = send(reader.get(format!(
        "{}/v1/proposals/{unanimous}?wait_ms=10000",
        cluster.url(1)
    )))
    .await;
    assert_eq!(
        (status, view["state"].as_str()),
        (200, Some("accepted")),
        "{view}"
    );
    let last = &view["tally"]["votes"][1];
    assert_eq!(
        (
            last["voter"].as_u64(),
            last["vote"].as_str(),
            last["cast_by"].as_str()
        ),
        (Some(sessions[1]), Some("abstain"), Some("session_ended")),
        "{view}"
    );
    // A bad rule is refused before anything is proposed.
    let (status, body) = post(
        &planner,
        format!("{}/v1/proposals", cluster.url(1)),
        json!({"title": "x", "voters": ["a"], "rule": {"threshold": 2}, "deadline_ms": 1000}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_rule")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_applies_all_or_nothing_is_idempotent_and_checks_every_ops_scope() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let base = cluster.url(1);
    let admin = &cluster.http;
    for (key, value) in [("acct/a", 10), ("acct/b", 0)] {
        let (status, _) = common::put(admin, &base, key, json!({"value": value})).await;
        assert_eq!(status, 200);
    }
    let version = |key: &'static str| {
        let (http, base) = (admin.clone(), base.clone());
        async move {
            common::get(&http, &base, key).await.1["version"]
                .as_u64()
                .unwrap()
        }
    };
    let bank = client_of("bank", &["agent:txn", "agent:kv:acct/"]);
    let transfer = json!({
        "compare": [{"key": "acct/a", "version": version("acct/a").await},
                    {"key": "acct/b", "version": version("acct/b").await},
                    {"key": "acct/a", "value": 10}],
        "success": [{"put": {"key": "acct/a", "value": 5}}, {"put": {"key": "acct/b", "value": 5}}],
        "failure": [],
        "request_id": "transfer-1"});
    let (status, first) = post(&bank, format!("{base}/v1/txn"), transfer.clone()).await;
    assert_eq!(
        (status, first["succeeded"].as_bool()),
        (200, Some(true)),
        "{first}"
    );
    let index = first["index"].as_u64().unwrap();
    assert_eq!(
        first["results"],
        json!([{"version": index}, {"version": index}]),
        "{first}"
    );
    // The same request again answers the same, applying nothing twice.
    let (status, again) = post(&bank, format!("{base}/v1/txn"), transfer.clone()).await;
    assert_eq!((status, &again), (200, &first));
    // The same compares now fail: the (empty) failure branch is taken.
    let mut stale = transfer.clone();
    stale["request_id"] = json!("transfer-2");
    let (status, body) = post(&bank, format!("{base}/v1/txn"), stale).await;
    assert_eq!(
        (status, body["succeeded"].as_bool(), body["results"].clone()),
        (200, Some(false), json!([])),
        "{body}"
    );
    assert_eq!(common::get(admin, &base, "acct/a").await.1["value"], 5);

    // Every op and compare needs the scope its own route would.
    let outside = json!({"success": [{"put": {"key": "other/x", "value": 1}}]});
    let (status, body) = post(&bank, format!("{base}/v1/txn"), outside).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let peek = json!({"compare": [{"key": "secret/k", "exists": true}], "success": []});
    let (status, _) = post(&bank, format!("{base}/v1/txn"), peek).await;
    assert_eq!(status, 403, "a compare reads its key");
    let no_txn = client_of("kv-only", &["agent:kv"]);
    let (status, _) = post(&no_txn, format!("{base}/v1/txn"), json!({"success": []})).await;
    assert_eq!(status, 403, "the route needs agent:txn");

    // A refused op aborts everything and names itself.
    let (_, holder) = post(
        admin,
        format!("{base}/v1/sessions"),
        json!({"name": "h", "ttl_ms": 60_000}),
    )
    .await;
    let (_, other) = post(
        admin,
        format!("{base}/v1/sessions"),
        json!({"name": "o", "ttl_ms": 60_000}),
    )
    .await;
    let (holder, other) = (
        holder["session_id"].as_u64().unwrap(),
        other["session_id"].as_u64().unwrap(),
    );
    let (status, held) = post(
        admin,
        format!("{base}/v1/locks/db/acquire"),
        json!({"session_id": holder}),
    )
    .await;
    assert_eq!(status, 200, "{held}");
    let blocked = json!({"success": [{"put": {"key": "acct/c", "value": 1}},
                                     {"acquire_lock": {"name": "db", "session_id": other}}]});
    let (status, body) = post(admin, format!("{base}/v1/txn"), blocked).await;
    assert_eq!(
        (
            status,
            body["error"]["code"].as_str(),
            body["error"]["op_index"].as_u64()
        ),
        (409, Some("lock_held"), Some(1)),
        "{body}"
    );
    assert_eq!(
        common::get(admin, &base, "acct/c").await.0,
        404,
        "nothing applied"
    );
    // Ops of other rooms, with the lock's token as a compare (a fenced write).
    let token = held["fencing_token"].as_u64().unwrap();
    let mixed = json!({"compare": [{"lock": "db", "fencing_token": token}],
                       "success": [{"submit_task": {"kind": "k", "payload": {"n": 1}}},
                                   {"acquire_semaphore": {"name": "pool", "session_id": other, "limit": 2}},
                                   {"release_lock": {"name": "db", "session_id": holder, "fencing_token": token}},
                                   {"delete": {"key": "acct/b"}}]});
    let (status, body) = post(admin, format!("{base}/v1/txn"), mixed).await;
    assert_eq!(
        (status, body["succeeded"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    let results = &body["results"];
    assert!(
        results[0]["task_id"].is_u64() && results[1]["fencing_token"].is_u64(),
        "{body}"
    );
    assert_eq!(
        (
            results[2]["released"].as_bool(),
            results[3]["deleted"].as_bool()
        ),
        (Some(true), Some(true)),
        "{body}"
    );
    // Shape: two ops on one key are refused before anything is proposed.
    let twice =
        json!({"success": [{"put": {"key": "acct/a", "value": 1}}, {"delete": {"key": "acct/a"}}]});
    let (status, body) = post(admin, format!("{base}/v1/txn"), twice).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_txn")),
        "{body}"
    );
}
