//! The client's agent helpers against real nodes: a `LockGuard`'s `lost()` when its
//! session is ended on purpose and its release on drop, the worker loop (complete,
//! fail, progress heartbeats, cancellation), and the watch stream resuming across a
//! node kill with no gap and no duplicate.

mod common;

use std::time::Duration;

use common::{Cluster, Options};
use conclave_client::{
    Client, Consistency, LockLoss, Session, SessionCreate, SessionOptions, TaskFailure, TaskSubmit,
    WatchOptions, WatchStart, WorkerOptions,
};
use futures_util::StreamExt;
use serde_json::json;

fn client_of(cluster: &Cluster) -> Client {
    Client::builder()
        .endpoints(cluster.running().into_iter().map(|id| cluster.url(id)))
        .token(common::admin_token())
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
}

async fn session(client: &Client, name: &str, capacity: u32) -> Session {
    let create = SessionCreate {
        name: name.into(),
        capacity: Some(capacity),
        ttl_ms: Some(10_000),
        ..SessionCreate::default()
    };
    Session::create(client, &create, SessionOptions::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_guard_is_lost_when_its_session_is_ended_and_released_when_dropped() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let client = client_of(&cluster);
    let admin = cluster.api(cluster.wait_for_leader(Duration::from_secs(20)).await);
    // Dropped: the lock is released for the next holder.
    let holder = session(&client, "holder", 0).await;
    let guard = holder.lock("helpers/dropped").await.unwrap();
    assert!(guard.fencing_token() > 0);
    drop(guard);
    let freed = common::wait_until(Duration::from_secs(10), || async {
        let view = admin
            .lock_get("helpers/dropped", Consistency::Linearizable)
            .await
            .ok()?;
        view["holders"].as_array()?.is_empty().then_some(())
    })
    .await;
    assert!(freed.is_some(), "the dropped guard released the lock");
    // Ended on purpose by someone else: the guard learns it from its stream.
    let guard = holder.lock("helpers/held").await.unwrap();
    assert_eq!(
        guard.guard(),
        json!({"lock": "helpers/held", "fencing_token": guard.fencing_token()})
    );
    assert_eq!(guard.is_lost(), None);
    admin.session_end(holder.id()).await.unwrap();
    let loss = tokio::time::timeout(Duration::from_secs(20), guard.lost())
        .await
        .expect("lost() resolved");
    assert_eq!(loss, LockLoss::SessionEnded);
    // Another session can take it now, with a later token.
    let other = session(&client, "other", 0).await;
    let next = other.lock("helpers/held").await.unwrap();
    assert!(next.fencing_token() > guard.fencing_token());
    next.release().await.unwrap();
    other.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_loop_completes_fails_heartbeats_progress_and_sees_cancellation() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let client = client_of(&cluster);
    let admin = client_of(&cluster);
    let worker = session(&client, "worker", 1).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let submit = TaskSubmit {
            kind: "job".into(),
            payload: Some(json!({"n": n})),
            max_attempts: Some(1),
            lease_ms: Some(900),
            ..TaskSubmit::default()
        };
        ids.push(client.task_submit(&submit).await.unwrap().task_id);
    }
    let cancel_target = ids[3];
    let handler = |task: conclave_client::TaskContext| {
        let admin = admin.clone();
        async move {
            let n = task.payload()["n"].as_u64().unwrap();
            task.set_progress(json!({"step": n}));
            if n == 3 {
                // Cancelled by the test while running: the handler sees it.
                task.cancelled().await;
                return Err(TaskFailure::from("cancelled"));
            }
            // The progress reaches the server with a heartbeat.
            let seen = common::wait_until(Duration::from_secs(10), || async {
                let view = admin
                    .task_get(task.task_id(), Consistency::Stale)
                    .await
                    .ok()?;
                (view["progress"] == json!({"step": n})).then_some(())
            })
            .await;
            assert!(
                seen.is_some(),
                "progress of task {} heartbeated",
                task.task_id()
            );
            match n {
                1 => Err(TaskFailure::from("boom")),
                _ => Ok(json!({"done": n})),
            }
        }
    };
    let options = WorkerOptions {
        wait_ms: 1_000,
        max_tasks: Some(4),
        ..WorkerOptions::default()
    };
    let canceller = async {
        let claimed = common::wait_until(Duration::from_secs(30), || async {
            let view = admin
                .task_get(cancel_target, Consistency::Linearizable)
                .await
                .ok()?;
            (view["claimed"] == json!(true)).then_some(())
        })
        .await;
        assert!(claimed.is_some(), "the last task was claimed");
        admin.task_cancel(cancel_target, None).await.unwrap();
    };
    let (report, ()) = tokio::join!(worker.work(options, handler), canceller);
    let report = report.unwrap();
    assert_eq!(
        (
            report.completed,
            report.failed,
            report.cancelled,
            report.lost
        ),
        (2, 1, 1, 0),
        "{report:?}"
    );
    let mut states = Vec::new();
    for id in &ids {
        let view = admin
            .task_get(*id, Consistency::Linearizable)
            .await
            .unwrap();
        states.push((
            view["state"].as_str().unwrap().to_owned(),
            view["result"].clone(),
        ));
    }
    assert_eq!(
        states,
        [
            ("succeeded".to_owned(), json!({"done": 0})),
            ("dead".to_owned(), json!(null)),
            ("succeeded".to_owned(), json!({"done": 2})),
            ("cancelled".to_owned(), json!(null)),
        ]
    );
    worker.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_stream_resumes_across_a_node_kill_without_gap_or_duplicate() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3, Options::default()).await;
    let writer = client_of(&cluster);
    let first = writer.kv_put("w/00", &json!(0)).await.unwrap();
    let options = WatchOptions {
        types: Some("kv".into()),
        prefix: Some("w/".into()),
        start: WatchStart::FromIndex(first.index),
        ..WatchOptions::default()
    };
    let mut stream = client_of(&cluster).watch(options);
    let mut keys = Vec::new();
    let mut ids = Vec::new();
    for n in 1..10 {
        writer
            .kv_put(&format!("w/{n:02}"), &json!(n))
            .await
            .unwrap();
    }
    for _ in 0..10 {
        let event = next_event(&mut stream).await;
        keys.push(event.field("key").as_str().unwrap().to_owned());
        ids.push((event.index, event.seq));
    }
    // Kill the node the stream reads from; write more while it is down.
    let endpoint = stream.endpoint().expect("connected");
    let victim = cluster
        .running()
        .into_iter()
        .find(|&id| endpoint.as_str().trim_end_matches('/') == cluster.url(id))
        .expect("the stream's node");
    cluster.kill(victim);
    for n in 10..20 {
        writer
            .kv_put(&format!("w/{n:02}"), &json!(n))
            .await
            .unwrap();
    }
    for _ in 10..20 {
        let event = next_event(&mut stream).await;
        keys.push(event.field("key").as_str().unwrap().to_owned());
        ids.push((event.index, event.seq));
    }
    let expected: Vec<String> = (0..20).map(|n| format!("w/{n:02}")).collect();
    assert_eq!(keys, expected);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    assert!(stream.reconnects() >= 1);
    let moved = stream.endpoint().unwrap();
    assert_ne!(moved, endpoint, "the stream moved to another node");
}

async fn next_event(stream: &mut conclave_client::Watch) -> conclave_client::Event {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("an event, not an error")
}
