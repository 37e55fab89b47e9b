//! Sessions and tasks on real `conclave` processes: capability routing, exactly-once
//! completion, lease loss, keepalive batching, and a leader crash mid-run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{refusal, send, wait_until, Cluster, Options};
use conclave_client::{Client, Consistency, SessionCreate, TaskComplete, TaskList, TaskSubmit};
use serde_json::json;

const LEADER_WAIT: Duration = Duration::from_secs(20);

async fn create_session(
    api: &Client,
    name: &str,
    capabilities: &[&str],
    capacity: u32,
    ttl_ms: u64,
) -> u64 {
    let create = SessionCreate {
        name: name.into(),
        capabilities: Some(capabilities.iter().map(|c| c.to_string()).collect()),
        capacity: Some(capacity),
        ttl_ms: Some(ttl_ms),
        ..SessionCreate::default()
    };
    api.session_create(&create)
        .await
        .expect("session created")
        .session_id
}

async fn submit(api: &Client, submit: &TaskSubmit) -> u64 {
    api.task_submit(submit)
        .await
        .expect("task submitted")
        .task_id
}

fn needing(kind: &str, capabilities: &[&str]) -> TaskSubmit {
    TaskSubmit {
        kind: kind.into(),
        required_capabilities: Some(capabilities.iter().map(|c| c.to_string()).collect()),
        ..TaskSubmit::default()
    }
}

/// What one agent did: the tasks whose completion the cluster accepted.
#[derive(Default)]
struct Record {
    completed: Vec<u64>,
    refused: u64,
}

/// A worker agent: keeps its session alive and claims → completes until told to stop.
fn spawn_agent(
    urls: Vec<String>,
    session_id: u64,
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let apis = common::apis(&urls, Duration::from_secs(5));
        let mut turn = 0usize;
        let mut last_keepalive = std::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            turn += 1;
            let api = &apis[turn % apis.len()];
            if last_keepalive.elapsed() > Duration::from_millis(300) {
                let _ = api.session_keepalive(session_id).await;
                last_keepalive = std::time::Instant::now();
            }
            let claimed = match api.task_claim(session_id, 200).await {
                Ok(Some(claimed)) => claimed,
                Ok(None) => continue, // 204: the wait ended with nothing
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let task_id = claimed.task["task_id"].as_u64().unwrap();
            let token = claimed.fencing_token;
            // A request_id makes retrying a completion whose answer was lost safe: the
            // retry returns the first result instead of a 409 for the finished task.
            let complete = TaskComplete {
                fencing_token: token,
                result: Some(json!({ "by": session_id })),
                request_id: Some(format!("complete-{task_id}-{token}")),
                ..TaskComplete::default()
            };
            // Retry the completion until a definite answer (a failover takes seconds);
            // a 409 means the lease was lost to someone else.
            let give_up = std::time::Instant::now() + Duration::from_secs(30);
            let mut attempt = 0;
            while std::time::Instant::now() < give_up {
                attempt += 1;
                let api = &apis[(turn + attempt) % apis.len()];
                match api.task_complete(task_id, &complete).await {
                    Ok(_) => {
                        record.lock().unwrap().completed.push(task_id);
                        break;
                    }
                    Err(error) if error.status() == Some(409) => {
                        record.lock().unwrap().refused += 1;
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_consume_a_thousand_tasks_exactly_once_and_only_where_capable() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let urls: Vec<String> = (1..=3).map(|id| cluster.url(id)).collect();
    let apis: Vec<Client> = (1..=3).map(|id| cluster.api(id)).collect();
    let agents = [
        ("alpha", vec!["cpu"]),
        ("beta", vec!["cpu", "gpu"]),
        ("gamma", vec!["cpu", "io"]),
    ];
    let mut sessions = BTreeMap::new();
    for (i, (name, capabilities)) in agents.iter().enumerate() {
        // No keepalives in this test: the TTL outlasts the whole run even on a loaded
        // machine (1,000 sequential submissions took over 5 s under CI-like load).
        let id = create_session(&apis[i], name, capabilities, 4, 120_000).await;
        sessions.insert(
            id,
            capabilities
                .iter()
                .map(|c| c.to_string())
                .collect::<BTreeSet<String>>(),
        );
    }
    // 1000 tasks, submitted before anyone works: most need only "cpu", some "gpu" or "io".
    let mut required = BTreeMap::new();
    for i in 0..1000u64 {
        let needs: Vec<&str> = match i % 10 {
            0 => vec!["gpu"],
            1 => vec!["io"],
            _ => vec!["cpu"],
        };
        let task = TaskSubmit {
            payload: Some(json!(i)),
            ..needing("unit", &needs)
        };
        let task_id = submit(&apis[i as usize % 3], &task).await;
        required.insert(
            task_id,
            needs
                .iter()
                .map(|c| c.to_string())
                .collect::<BTreeSet<String>>(),
        );
    }
    // Assignment filled every agent to its capacity: equal loads.
    let listed = apis[1].session_list(&Default::default()).await.unwrap();
    let loads: Vec<u64> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["load"].as_u64().unwrap())
        .collect();
    assert_eq!(loads, vec![4, 4, 4], "{listed}");

    let stop = Arc::new(AtomicBool::new(false));
    let records: BTreeMap<u64, Arc<Mutex<Record>>> = sessions
        .keys()
        .map(|id| (*id, Arc::new(Mutex::new(Record::default()))))
        .collect();
    let workers: Vec<_> = records
        .iter()
        .map(|(id, record)| spawn_agent(urls.clone(), *id, stop.clone(), record.clone()))
        .collect();
    let done = wait_until(Duration::from_secs(120), || async {
        let total: usize = records
            .values()
            .map(|r| r.lock().unwrap().completed.len())
            .sum();
        (total >= required.len()).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(
        done.is_some(),
        "not all tasks completed\n{}",
        cluster.logs()
    );

    let mut completed_by: BTreeMap<u64, u64> = BTreeMap::new();
    for (session, record) in &records {
        for task in &record.lock().unwrap().completed {
            assert!(
                completed_by.insert(*task, *session).is_none(),
                "task {task} was completed twice"
            );
        }
    }
    assert_eq!(completed_by.len(), required.len());
    let mut unconstrained_share: BTreeMap<u64, usize> = BTreeMap::new();
    for (task, session) in &completed_by {
        let needs = &required[task];
        assert!(
            needs.is_subset(&sessions[session]),
            "task {task} needing {needs:?} went to {session}"
        );
        if needs.len() == 1 && needs.contains("cpu") {
            *unconstrained_share.entry(*session).or_default() += 1;
        }
    }
    // With a backlog, each freed slot takes the next task: agents that work at the
    // same pace share the work every one of them can do.
    for session in sessions.keys() {
        let share = unconstrained_share.get(session).copied().unwrap_or(0);
        assert!(
            share >= 150,
            "agent {session} got only {share} of 800 cpu tasks: {unconstrained_share:?}"
        );
    }
    // Every task is recorded as succeeded in the replicated state, with its result.
    let succeeded = TaskList {
        state: Some("succeeded".into()),
        limit: Some(1000),
        ..TaskList::default()
    };
    let page = apis[0].task_list(&succeeded).await.expect("listed");
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        1000,
        "{}",
        page["next_after"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_stops_heart_beating_has_its_task_reassigned_after_its_ttl() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let (a, b) = (cluster.api(1), cluster.api(2));
    let silent = create_session(&a, "silent", &["x"], 1, 1_000).await;
    let job = TaskSubmit {
        lease_ms: Some(60_000),
        ..needing("job", &["x"])
    };
    let task = submit(&a, &job).await;
    let claimed = a
        .task_claim(silent, 2000)
        .await
        .unwrap()
        .expect("the silent agent claims");
    assert_eq!(claimed.task["task_id"], task);
    let stale_token = claimed.fencing_token;

    // A healthy agent joins; the silent one never sends a keepalive.
    let healthy = create_session(&b, "healthy", &["x"], 1, 30_000).await;
    let reclaimed = b
        .task_claim(healthy, 15_000)
        .await
        .unwrap()
        .expect("the task was not reassigned after the silent session's TTL");
    assert_eq!(reclaimed.task["task_id"], task);
    let token = reclaimed.fencing_token;
    assert!(token > stale_token);
    assert_eq!(reclaimed.task["attempts"], 2);
    assert_eq!(reclaimed.task["errors"][0]["reason"], "session_ended");

    // The silent agent wakes up: its completion is refused; the new holder's works.
    let late = TaskComplete {
        fencing_token: stale_token,
        result: Some(json!("late")),
        ..TaskComplete::default()
    };
    assert_eq!(
        refusal(a.task_complete(task, &late).await),
        (409, "stale_fencing_token".to_owned())
    );
    let done = TaskComplete {
        fencing_token: token,
        result: Some(json!(1)),
        ..TaskComplete::default()
    };
    b.task_complete(task, &done).await.expect("completed");
    let view = a.task_get(task, Consistency::Linearizable).await.unwrap();
    assert_eq!(
        (view["state"].clone(), view["result"].clone()),
        (json!("succeeded"), json!(1))
    );
    // And its session is gone: keepalives for it are refused.
    assert_eq!(
        refusal(a.session_get(silent, Consistency::Linearizable).await).0,
        404
    );
    assert_eq!(
        refusal(a.session_keepalive(silent).await),
        (404, "session_not_found".to_owned())
    );
    // Only the leader accepts keepalives: a follower that is asked directly (as if
    // already forwarded) refuses instead of recording a renewal nobody replicates.
    // (Raw reqwest: the client never sends `x-conclave-forwarded`.)
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let direct = cluster
        .http
        .post(format!(
            "{}/v1/sessions/{healthy}/keepalive",
            cluster.url(follower)
        ))
        .header("x-conclave-forwarded", "0");
    let (status, body) = send(direct).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, json!("no_leader")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_are_replicated_in_batches_and_extend_sessions() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let api = cluster.api(1);
    let mut sessions = Vec::new();
    for i in 0..100 {
        sessions.push(create_session(&api, &format!("s{i}"), &[], 0, 5_000).await);
    }
    let before = api
        .session_get(sessions[0], Consistency::Linearizable)
        .await
        .unwrap();
    let entries_before = cluster.status(1).await.unwrap()["last_log_index"]
        .as_u64()
        .unwrap();
    let mut keepalives = 0;
    for _round in 0..5 {
        let calls = sessions.iter().map(|id| api.session_keepalive(*id));
        for answer in futures_join(calls).await {
            answer.expect("keepalive accepted");
            keepalives += 1;
        }
    }
    // The renewal reaches the replicated state within a flush interval or so.
    let renewed = wait_until(Duration::from_secs(5), || async {
        let now = api
            .session_get(sessions[0], Consistency::Linearizable)
            .await
            .ok()?;
        (now["expires_at_ms"].as_u64()? > before["expires_at_ms"].as_u64()?).then_some(())
    })
    .await;
    assert!(
        renewed.is_some(),
        "keepalives never reached the replicated expiry"
    );
    let entries = cluster.status(1).await.unwrap()["last_log_index"]
        .as_u64()
        .unwrap()
        - entries_before;
    eprintln!("{keepalives} keepalives cost {entries} log entries");
    assert!(
        entries * 10 < keepalives,
        "{entries} log entries for {keepalives} keepalives"
    );
}

/// Runs the futures concurrently (keepalives are answered once their batched tick
/// commits, so sequential calls would each wait for a flush of their own).
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    futures_util::future::join_all(futures).await
}

/// Regression (issue #11): the leader answered a keepalive from memory before the
/// renewal was in the log, so a leader cut off from its quorum kept telling agents
/// they were alive while the majority expired them. Now the answer waits until the
/// tick carrying the renewal is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_on_a_leader_cut_off_from_its_quorum_is_not_acknowledged() {
    let _serial = common::serial().await;
    let options = Options {
        extra_toml: "[limits]\nwrite_timeout_ms = 1000\n".into(),
        ..Options::default()
    };
    let cluster = Cluster::start(3, options).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let session = create_session(&api, "cut-off", &[], 0, 20_000).await;
    api.session_keepalive(session)
        .await
        .expect("acknowledged while the quorum answers");
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for follower in &followers {
        cluster.signal(*follower, "STOP");
    }
    let cut_off = api.session_keepalive(session).await;
    for follower in &followers {
        cluster.signal(*follower, "CONT");
    }
    let (status, code) = common::refusal(cut_off);
    assert!(
        (status == 504 && code == "indeterminate") || (status == 503 && code == "no_leader"),
        "a keepalive the quorum never saw was answered {status} {code}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_crash_mid_run_loses_no_task_and_ttls_continue_from_the_log() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3, Options::default()).await;
    let urls: Vec<String> = (1..=3).map(|id| cluster.url(id)).collect();
    let apis: Vec<Client> = (1..=3).map(|id| cluster.api(id)).collect();
    // A session nobody keeps alive: its expiry must survive the failover unchanged.
    let doomed = create_session(&apis[0], "doomed", &[], 0, 6_000).await;
    let doomed_view = apis[0]
        .session_get(doomed, Consistency::Linearizable)
        .await
        .unwrap();
    let doomed_expiry = doomed_view["expires_at_ms"].as_u64().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let mut records = Vec::new();
    let mut workers = Vec::new();
    for (i, api) in apis.iter().enumerate() {
        let id = create_session(api, &format!("worker{i}"), &["w"], 2, 3_000).await;
        let record = Arc::new(Mutex::new(Record::default()));
        workers.push(spawn_agent(urls.clone(), id, stop.clone(), record.clone()));
        records.push(record);
    }
    let mut submitted = BTreeSet::new();
    for i in 0..150u64 {
        let task = TaskSubmit {
            payload: Some(json!(i)),
            idempotency_key: Some(format!("k{i}")),
            ..needing("w", &["w"])
        };
        // Submissions retry through the failover (idempotency keys make that safe).
        // A node just restarted may not listen yet: a refused connection is retried too.
        let task = wait_until(Duration::from_secs(20), || async {
            let submitted = apis[i as usize % 3].task_submit(&task).await.ok()?;
            Some(submitted.task_id)
        })
        .await
        .expect("submit");
        submitted.insert(task);
        if i == 50 {
            let leader = cluster.wait_for_leader(LEADER_WAIT).await;
            cluster.kill(leader);
            let next = cluster.wait_for_leader(LEADER_WAIT).await;
            assert_ne!(next, leader);
            // The cluster's view of the unkept session's expiry is the log's, not reset.
            let view = cluster
                .api(next)
                .session_get(doomed, Consistency::Linearizable)
                .await;
            if let Ok(view) = view {
                assert_eq!(
                    view["expires_at_ms"].as_u64().unwrap(),
                    doomed_expiry,
                    "TTL reset by failover"
                );
            }
            cluster.spawn(leader);
        }
    }
    let all_done = wait_until(Duration::from_secs(90), || async {
        let total: usize = records
            .iter()
            .map(|r| r.lock().unwrap().completed.len())
            .sum();
        (total >= submitted.len()).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    if all_done.is_none() {
        let completed: BTreeSet<u64> = records
            .iter()
            .flat_map(|r| r.lock().unwrap().completed.clone())
            .collect();
        let mut stuck = Vec::new();
        for task in submitted.difference(&completed) {
            let view = apis[0].task_get(*task, Consistency::Linearizable).await;
            stuck.push(view.unwrap_or_else(|error| json!(error.to_string())));
        }
        panic!(
            "{} tasks not completed: {stuck:#?}\n{}",
            stuck.len(),
            cluster.logs()
        );
    }
    let mut seen = BTreeSet::new();
    for record in &records {
        for task in &record.lock().unwrap().completed {
            assert!(seen.insert(*task), "task {task} completion accepted twice");
        }
    }
    assert_eq!(seen, submitted);
    // The unkept session expires at its logged expiry, not after a reset by the
    // failover: it is never seen alive once cluster time is well past that expiry
    // (the slack covers the ticker's scheduling), and it does go.
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    let leader_api = cluster.api(leader);
    let gone = wait_until(Duration::from_secs(30), || async {
        let cluster_time = cluster.status(leader).await?["cluster_time_ms"].as_u64()?;
        match leader_api
            .session_get(doomed, Consistency::Linearizable)
            .await
        {
            Ok(_) => {
                assert!(
                    cluster_time <= doomed_expiry + 2_000,
                    "session outlived its logged expiry: TTL was reset"
                );
                None
            }
            Err(error) => (error.status() == Some(404)).then_some(()),
        }
    })
    .await;
    assert!(gone.is_some(), "the unkept session never expired");
}
