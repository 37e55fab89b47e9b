//! Three real `conclave` processes: forwarding, linearizable and stale reads,
//! leader crashes under load, snapshot catch-up, membership changes.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{refusal, wait_until, Cluster, Options};
use conclave_client::{Consistency, KvPut, MemberAdd};
use serde_json::{json, Value};

const LEADER_WAIT: Duration = Duration::from_secs(20);

fn member_ids(view: &Value) -> Vec<u64> {
    (view["members"].as_array().unwrap().iter())
        .map(|member| member["id"].as_u64().unwrap())
        .collect()
}

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

    // The default read is linearizable: the third node serves it itself after the
    // leader's read index (#16), and forwards nothing.
    let body = (cluster
        .api(reader)
        .kv_get("greeting", Consistency::Linearizable)
        .await)
        .expect("the write is read through the third node");
    assert_eq!(body["value"], json!({ "hello": "world" }));
    assert_eq!(body["version"], index);
    // Read-your-writes across nodes, 40 times: each write acknowledged by the leader
    // is read at once through each follower. A follower serving its own state
    // without the leader's read index would often be a heartbeat behind here.
    for round in 0..40u64 {
        let version = cluster
            .api(leader)
            .kv_put("counter", &json!(round))
            .await
            .expect("written")
            .version;
        for &follower in &others {
            let body = (cluster.api(follower))
                .kv_get("counter", Consistency::Linearizable)
                .await
                .expect("read through a follower");
            assert_eq!(
                (body["value"].clone(), body["version"].as_u64()),
                (json!(round), Some(version)),
                "round {round}, node {follower}"
            );
        }
    }
    let metrics = cluster.api(reader).metrics_text().await.expect("metrics");
    let forwarded = metrics
        .lines()
        .find_map(|line| line.strip_prefix("conclave_http_forwarded_total "))
        .map(|value| value.trim().parse::<f64>().unwrap());
    assert_eq!(
        forwarded,
        Some(0.0),
        "the reads were served on node {reader}"
    );

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
    cluster
        .api(leader)
        .kv_put("config/mode", &json!("blue"))
        .await
        .expect("written");
    let api = cluster.api(isolated);
    let replicated = wait_until(Duration::from_secs(10), || async {
        api.kv_get("config/mode", Consistency::Stale).await.ok()
    })
    .await;
    assert!(replicated.is_some(), "the follower never applied the write");

    // Cut it off: the two other nodes die.
    for id in [1, 2, 3].into_iter().filter(|&id| id != isolated) {
        cluster.kill(id);
    }
    let body =
        (api.kv_get("config/mode", Consistency::Stale).await).expect("a stale read served alone");
    assert_eq!(body["value"], "blue");
    // A linearizable read cannot be served: a definite 503, never a stale answer.
    // (`cluster.api` sends once to this node, so the 503 is what the test sees.)
    let (status, code) = refusal(api.kv_get("config/mode", Consistency::Linearizable).await);
    assert_eq!(status, 503, "{code}");
    assert!(
        ["no_leader", "unavailable"].contains(&code.as_str()),
        "{code}"
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
                let (stop, acknowledged, attempts, failures, urls) = (
                    stop.clone(),
                    acknowledged.clone(),
                    attempts.clone(),
                    failures.clone(),
                    urls.clone(),
                );
                tokio::spawn(async move {
                    // A client per node, each sending once: the writer itself spreads
                    // its writes and counts every failed attempt.
                    let apis = common::apis(&urls, Duration::from_secs(3));
                    let mut sequence = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        sequence += 1;
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let key = format!("load/{writer}/{sequence}");
                        let api = &apis[(sequence as usize + writer) % apis.len()];
                        let options = KvPut {
                            request_id: Some(format!("{writer}-{sequence}")),
                            ..KvPut::default()
                        };
                        match api.kv_put_with(&key, &json!(sequence), &options).await {
                            Ok(_) => {
                                acknowledged.lock().unwrap().insert(key, sequence);
                            }
                            Err(error) => {
                                let status = error.status().unwrap_or(0);
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
        let api = cluster.api(new_leader);
        let served = wait_until(LEADER_WAIT, || async {
            let key = format!("round/{round}");
            api.kv_put(&key, &json!(round)).await.ok()
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
    let api = cluster.api(leader);
    for (key, sequence) in &acknowledged {
        let body = (api.kv_get(key, Consistency::Linearizable).await)
            .unwrap_or_else(|error| panic!("acknowledged write {key} lost: {error}"));
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
    let api = cluster.api(leader);
    for i in 0..300 {
        api.kv_put(&format!("snap/{i}"), &json!(i)).await.unwrap();
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
    let caught_up = cluster.api(lagging);
    for i in [0, 150, 299] {
        let body = (caught_up
            .kv_get(&format!("snap/{i}"), Consistency::Stale)
            .await)
            .unwrap();
        assert_eq!(body["value"], json!(i));
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

    let api = cluster.api(leader);
    let body = api.member_remove(leaving).await.expect("removed");
    assert!(!member_ids(&body).contains(&leaving), "{body}");
    cluster.kill(leaving);
    std::fs::remove_dir_all(&cluster.node(leaving).data_dir).unwrap();
    for i in 0..60 {
        api.kv_put(&format!("m/{i}"), &json!(i)).await.unwrap();
    }
    // The wiped node comes back empty and must not initialize a cluster of its own.
    let config = std::fs::read_to_string(&cluster.node(leaving).config_path).unwrap();
    let rejoin = config.replace("initial_members = [1, 2, 3]", "initial_members = []");
    std::fs::write(&cluster.node(leaving).config_path, rejoin).unwrap();
    cluster.spawn(leaving);
    let addr = format!("127.0.0.1:{}", cluster.node(leaving).port);
    let raft_addr = cluster.node(leaving).raft_addr();
    let add = MemberAdd {
        id: leaving,
        addr,
        raft_addr: Some(raft_addr),
        voter: Some(true),
    };
    let body = api.member_add(&add).await.expect("re-added");
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
    let body = (cluster
        .api(leaving)
        .kv_get("m/59", Consistency::Stale)
        .await)
        .unwrap();
    assert_eq!(body["value"], json!(59));
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
    let through = cluster.api(follower);
    let add = MemberAdd {
        id: 4,
        addr,
        raft_addr: Some(raft_addr),
        voter: Some(true),
    };
    let error = through.member_add(&add).await.expect_err("not caught up");
    let refused = error.api().expect("an API refusal");
    assert_eq!(
        (refused.status, refused.code.as_str()),
        (409, "learner_not_caught_up"),
        "{error}"
    );
    // How far it got (nothing: nothing listens there) and what it had to reach.
    assert_eq!(refused.detail("matched_index"), &json!(null), "{error}");
    assert!(refused.detail("target_index").as_u64() > Some(1), "{error}");
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
    cluster
        .api(leader)
        .kv_put("after", &json!(1))
        .await
        .unwrap();
    let body = through.member_remove(4).await.expect("the learner removed");
    assert!(!member_ids(&body).contains(&4), "{body}");
}
