//! Three real `conclave` processes: forwarding, linearizable and stale reads,
//! leader crashes under load, snapshot catch-up, membership changes.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{get, put, send, wait_until, Cluster, Options};
use serde_json::{json, Value};

const LEADER_WAIT: Duration = Duration::from_secs(20);

fn followers(cluster: &Cluster, leader: u64) -> Vec<u64> {
    cluster
        .running()
        .into_iter()
        .filter(|&id| id != leader)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_a_follower_is_read_linearizably_through_the_third_node() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    let others = followers(&cluster, leader);
    let (writer, reader) = (others[0], others[1]);

    let response = cluster
        .http
        .put(format!("{}/v1/kv/greeting", cluster.url(writer)))
        .json(&json!({ "value": { "hello": "world" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-conclave-leader"],
        leader.to_string().as_str()
    );
    let index: u64 = response.headers()["x-conclave-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["version"], index);

    // The default read is linearizable: the third node forwards it to the leader.
    let (status, body) = get(&cluster.http, &cluster.url(reader), "greeting").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], json!({ "hello": "world" }));
    assert_eq!(body["version"], index);

    // ?redirect=true answers 307 with the leader's URL instead of forwarding.
    let no_follow = common::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_follow
        .get(format!(
            "{}/v1/kv/greeting?redirect=true",
            cluster.url(reader)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(&cluster.url(leader)), "{location}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_read_works_on_a_node_cut_off_from_the_leader() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    let isolated = followers(&cluster, leader)[0];
    let (status, _) = put(
        &cluster.http,
        &cluster.url(leader),
        "config/mode",
        json!({ "value": "blue" }),
    )
    .await;
    assert_eq!(status, 200);
    let stale_url = format!(
        "{}/v1/kv/config/mode?consistency=stale",
        cluster.url(isolated)
    );
    let replicated = wait_until(Duration::from_secs(10), || async {
        let (status, body) = send(cluster.http.get(&stale_url)).await;
        (status == 200).then_some(body)
    })
    .await;
    assert!(replicated.is_some(), "the follower never applied the write");

    // Cut it off: the two other nodes die.
    for id in [1, 2, 3].into_iter().filter(|&id| id != isolated) {
        cluster.kill(id);
    }
    let (status, body) = send(cluster.http.get(&stale_url)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], "blue");
    // A linearizable read cannot be served: a definite 503, never a stale answer.
    let (status, body) = get(&cluster.http, &cluster.url(isolated), "config/mode").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        ["no_leader", "unavailable"].contains(&body["error"]["code"].as_str().unwrap()),
        "{body}"
    );
}

/// Writers that record every acknowledged write, spreading requests over nodes.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<BTreeMap<String, u64>>>,
    attempts: Arc<AtomicU64>,
    /// Failed attempts by HTTP status (0: no response), for the test's report.
    failures: Arc<Mutex<BTreeMap<u16, u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(urls: Vec<String>, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
        let attempts = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = (0..writers)
            .map(|writer| {
                let (stop, acknowledged, attempts, failures, urls) =
                    (stop.clone(), acknowledged.clone(), attempts.clone(), failures.clone(), urls.clone());
                tokio::spawn(async move {
                    let http = common::client_builder().timeout(Duration::from_secs(3)).build().unwrap();
                    let mut sequence = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        sequence += 1;
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let key = format!("load/{writer}/{sequence}");
                        let url = &urls[(sequence as usize + writer) % urls.len()];
                        let body = json!({ "value": sequence, "request_id": format!("{writer}-{sequence}") });
                        match http.put(format!("{url}/v1/kv/{key}")).json(&body).send().await {
                            Ok(response) if response.status() == 200 => {
                                acknowledged.lock().unwrap().insert(key, sequence);
                            }
                            failed => {
                                let status = failed.map_or(0, |response| response.status().as_u16());
                                *failures.lock().unwrap().entry(status).or_default() += 1;
                                // A client's retry backoff (dead node, election under way).
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acknowledged,
            attempts,
            failures,
            tasks,
        }
    }

    fn acknowledged_count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    async fn finish(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.acknowledged)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_under_load_loses_no_acknowledged_write_ten_times() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3, Options::default()).await;
    let urls: Vec<String> = (1..=3).map(|id| cluster.url(id)).collect();
    let load = Load::start(urls, 8);

    for round in 0..10 {
        let leader = cluster.wait_for_leader(LEADER_WAIT).await;
        // Let some writes land under this leader before it dies.
        let before = load.acknowledged_count();
        let progressed = wait_until(Duration::from_secs(20), || async {
            (load.acknowledged_count() >= before + 20).then_some(())
        })
        .await;
        assert!(
            progressed.is_some(),
            "round {round}: no progress under leader {leader}\n{}",
            cluster.logs()
        );
        cluster.kill(leader);
        let killed_at = std::time::Instant::now();
        let new_leader = cluster.wait_for_leader(LEADER_WAIT).await;
        assert_ne!(new_leader, leader);
        // The new leader serves writes.
        let served = wait_until(LEADER_WAIT, || async {
            let body = json!({ "value": round });
            let (status, _) = put(
                &cluster.http,
                &cluster.url(new_leader),
                &format!("round/{round}"),
                body,
            )
            .await;
            (status == 200).then_some(())
        })
        .await;
        assert!(
            served.is_some(),
            "round {round}: new leader {new_leader} did not serve a write"
        );
        // Reported, never asserted (timing depends on the machine).
        eprintln!(
            "round {round}: leader {leader} killed; node {new_leader} served a write after {:?}",
            killed_at.elapsed()
        );
        cluster.spawn(leader);
    }
    let attempts = load.attempts.load(Ordering::Relaxed);
    let failures = load.failures.lock().unwrap().clone();
    let acknowledged = load.finish().await;
    eprintln!("{} of {attempts} writes acknowledged across 10 leader kills; failures by status: {failures:?}", acknowledged.len());
    assert!(
        acknowledged.len() > 200,
        "too little load to mean anything: {}",
        acknowledged.len()
    );

    // Every acknowledged write is readable, linearizably, with its value.
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    for (key, sequence) in &acknowledged {
        let (status, body) = get(&cluster.http, &cluster.url(leader), key).await;
        assert_eq!(status, 200, "acknowledged write {key} lost: {body}");
        assert_eq!(body["value"], *sequence, "{key}");
    }
    // Every node (the restarted ones included) catches up to the same state.
    let target = cluster.status(leader).await.unwrap()["commit_index"]
        .as_u64()
        .unwrap();
    for id in 1..=3 {
        cluster
            .wait_applied(id, target, Duration::from_secs(30))
            .await;
    }
    let commands: Vec<u64> = {
        let mut all = Vec::new();
        for id in 1..=3 {
            all.push(
                cluster.status(id).await.unwrap()["last_command_index"]
                    .as_u64()
                    .unwrap(),
            );
        }
        all
    };
    assert!(
        commands.iter().all(|&c| c == commands[0]),
        "replicas disagree: {commands:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_purged_log_catches_up_by_snapshot() {
    let _serial = common::serial().await;
    let options = Options {
        extra_toml: "[raft]\nsnapshot_logs_since_last = 50\nmax_in_snapshot_log_to_keep = 0\npurge_batch_size = 1\n"
            .into(),
        ..Options::default()
    };
    let mut cluster = Cluster::start(3, options).await;
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    let lagging = followers(&cluster, leader)[0];
    let lagging_last_log = cluster.status(lagging).await.unwrap()["last_log_index"]
        .as_u64()
        .unwrap();
    cluster.kill(lagging);

    // Sequential writes make one log entry each, so the log grows past several snapshots.
    for i in 0..300 {
        let (status, body) = put(
            &cluster.http,
            &cluster.url(leader),
            &format!("snap/{i}"),
            json!({ "value": i }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let leader_status = cluster.status(leader).await.unwrap();
    let purged = leader_status["purged_index"].as_u64().unwrap_or(0);
    assert!(
        purged > lagging_last_log + 200,
        "the leader should have purged past node {lagging}'s log ({lagging_last_log}): {leader_status}"
    );

    cluster.spawn(lagging);
    let commit = leader_status["commit_index"].as_u64().unwrap();
    cluster
        .wait_applied(lagging, commit, Duration::from_secs(30))
        .await;
    let status = cluster.status(lagging).await.unwrap();
    // It could only have caught up from a snapshot: the entries it lacked are gone.
    let snapshot_index = status["snapshot_index"].as_u64().unwrap_or(0);
    assert!(
        snapshot_index >= purged,
        "node {lagging} should have installed a snapshot: {status}"
    );
    assert!(cluster.log(lagging).contains("serving"));
    for i in [0, 150, 299] {
        let url = format!("{}/v1/kv/snap/{i}?consistency=stale", cluster.url(lagging));
        let (code, body) = send(cluster.http.get(url)).await;
        assert_eq!((code, body["value"].clone()), (200, json!(i)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_wiped_and_re_added_node_catches_up() {
    let _serial = common::serial().await;
    let options = Options {
        extra_toml: "[raft]\nsnapshot_logs_since_last = 20\npurge_batch_size = 1\n".into(),
        ..Options::default()
    };
    let mut cluster = Cluster::start(3, options).await;
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    let leaving = followers(&cluster, leader)[0];

    let (status, body) = send(cluster.http.delete(format!(
        "{}/v1/cluster/members/{leaving}",
        cluster.url(leader)
    )))
    .await;
    assert_eq!(status, 200, "{body}");
    let members: Vec<u64> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert!(!members.contains(&leaving), "{body}");
    cluster.kill(leaving);
    std::fs::remove_dir_all(&cluster.node(leaving).data_dir).unwrap();
    for i in 0..60 {
        let (status, _) = put(
            &cluster.http,
            &cluster.url(leader),
            &format!("m/{i}"),
            json!({ "value": i }),
        )
        .await;
        assert_eq!(status, 200);
    }
    // The wiped node comes back empty and must not initialize a cluster of its own.
    let config = std::fs::read_to_string(&cluster.node(leaving).config_path).unwrap();
    let rejoin = config.replace("initial_members = [1, 2, 3]", "initial_members = []");
    std::fs::write(&cluster.node(leaving).config_path, rejoin).unwrap();
    cluster.spawn(leaving);
    let addr = format!("127.0.0.1:{}", cluster.node(leaving).port);
    let raft_addr = cluster.node(leaving).raft_addr();
    let request = cluster
        .http
        .post(format!("{}/v1/cluster/members", cluster.url(leader)))
        .json(&json!({ "id": leaving, "addr": addr, "raft_addr": raft_addr, "voter": true }));
    let (status, body) = send(request).await;
    assert_eq!(status, 200, "{body}");
    let rejoined = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == leaving)
        .cloned();
    assert_eq!(
        rejoined.map(|m| m["role"].clone()),
        Some(json!("voter")),
        "{body}"
    );
    let commit = cluster.status(leader).await.unwrap()["commit_index"]
        .as_u64()
        .unwrap();
    cluster
        .wait_applied(leaving, commit, Duration::from_secs(30))
        .await;
    let url = format!("{}/v1/kv/m/59?consistency=stale", cluster.url(leaving));
    let (code, body) = send(cluster.http.get(url)).await;
    assert_eq!((code, body["value"].clone()), (200, json!(59)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_replicate_is_never_promoted_to_voter() {
    let _serial = common::serial().await;
    let options = Options {
        extra_toml: "[limits]\nlearner_catch_up_ms = 2000\n".into(),
        ..Options::default()
    };
    let cluster = Cluster::start(3, options).await;
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    // Node 4 "exists" at an address where nothing listens.
    let dead = common::free_ports(2);
    let addr = format!("127.0.0.1:{}", dead[0]);
    let raft_addr = format!("127.0.0.1:{}", dead[1]);
    let follower = followers(&cluster, leader)[0];
    let request = cluster
        .http
        .post(format!("{}/v1/cluster/members", cluster.url(follower)))
        .json(&json!({ "id": 4, "addr": addr, "raft_addr": raft_addr, "voter": true }));
    let (status, body) = send(request).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("learner_not_caught_up")),
        "{body}"
    );
    // How far it got (nothing: nothing listens there) and what it had to reach.
    assert_eq!(body["error"]["matched_index"], json!(null), "{body}");
    assert!(body["error"]["target_index"].as_u64() > Some(1), "{body}");
    let info = cluster.status(leader).await.unwrap();
    let node4 = info["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 4)
        .cloned()
        .unwrap();
    assert_eq!(node4["role"], "learner", "{info}");
    // The three voters still make progress, and the learner can be removed.
    assert_eq!(
        put(
            &cluster.http,
            &cluster.url(leader),
            "after",
            json!({ "value": 1 })
        )
        .await
        .0,
        200
    );
    let (status, body) = send(
        cluster
            .http
            .delete(format!("{}/v1/cluster/members/4", cluster.url(follower))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"] != 4),
        "{body}"
    );
}
