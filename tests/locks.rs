//! Locks and guards on real `conclave` processes: contention with fenced writes,
//! a paused holder's late write refused, waits that survive a leader crash.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{refusal, wait_until, Cluster, Options};
use conclave_client::{Client, Consistency, Error, KvPut, LockAcquire, Release, TaskSubmit};
use serde_json::json;

const LEADER_WAIT: Duration = Duration::from_secs(20);

async fn session(api: &Client, ttl_ms: u64) -> u64 {
    common::observer_session(api, "locker", ttl_ms).await
}

fn acquire(session_id: u64, wait_ms: u64) -> LockAcquire {
    LockAcquire {
        session_id,
        wait_ms: Some(wait_ms),
        ..LockAcquire::default()
    }
}

fn release(session_id: u64, fencing_token: u64) -> Release {
    Release {
        session_id,
        fencing_token,
        ..Release::default()
    }
}

fn guarded(lock: &str, fencing_token: u64) -> KvPut {
    KvPut {
        guard: Some(json!({ "lock": lock, "fencing_token": fencing_token })),
        ..KvPut::default()
    }
}

/// Retries a call through transient failures (503/504/no answer), turning through
/// `apis`, until it gets a definite answer or `limit` passes.
async fn definite<T, F, Fut>(
    apis: &[Client],
    what: &str,
    limit: Duration,
    mut call: F,
) -> Result<T, Error>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + limit;
    let mut turn = 0;
    loop {
        turn += 1;
        match call(apis[turn % apis.len()].clone()).await {
            Err(error)
                if matches!(error, Error::Transport(_))
                    || matches!(error.status(), Some(503 | 504)) => {}
            answer => return answer,
        }
        assert!(
            Instant::now() < deadline,
            "no definite answer to {what} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_contend_and_every_fenced_increment_counts_once() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let urls: Vec<String> = (1..=3).map(|id| cluster.url(id)).collect();
    cluster
        .api(1)
        .kv_put("counter", &json!(0))
        .await
        .expect("counter written");
    let deadline = Instant::now() + Duration::from_secs(10);
    let grants: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let mut clients = Vec::new();
    for client in 0..20 {
        let url = urls[client % 3].clone();
        let grants = grants.clone();
        clients.push(tokio::spawn(async move {
            let api = common::api(&url);
            let me = session(&api, 30_000).await;
            while Instant::now() < deadline {
                let token = match api.lock_acquire("counter", &acquire(me, 5000)).await {
                    Ok(granted) => granted.fencing_token,
                    Err(error) => {
                        assert_eq!(error.code(), Some("lock_held"), "{error}");
                        continue;
                    }
                };
                let current = api
                    .kv_get("counter", Consistency::Linearizable)
                    .await
                    .unwrap();
                let next = current["value"].as_u64().unwrap() + 1;
                if let Err(error) = api
                    .kv_put_with("counter", &json!(next), &guarded("counter", token))
                    .await
                {
                    panic!("a current holder's guarded write was refused: {error}");
                }
                grants.lock().unwrap().push((next, token));
                api.lock_release("counter", &release(me, token))
                    .await
                    .expect("released");
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let mut grants = grants.lock().unwrap().clone();
    let counter = cluster
        .api(2)
        .kv_get("counter", Consistency::Linearizable)
        .await
        .unwrap();
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
    let lock = cluster
        .api(3)
        .lock_get("counter", Consistency::Linearizable)
        .await
        .unwrap();
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
    let (a, b) = (cluster.api(1), cluster.api(3));
    let paused = session(&a, 1_000).await;
    let granted = a
        .lock_acquire("resource", &acquire(paused, 0))
        .await
        .unwrap();
    let old_token = granted.fencing_token;
    a.kv_put_with(
        "resource",
        &json!("before"),
        &guarded("resource", old_token),
    )
    .await
    .expect("the holder's guarded write");

    let next = session(&b, 30_000).await;
    let granted = match b.lock_acquire("resource", &acquire(next, 15_000)).await {
        Ok(granted) => granted,
        Err(error) => panic!("the lock never passed on after the holder's TTL: {error}"),
    };
    let new_token = granted.fencing_token;
    assert!(new_token > old_token);

    assert_eq!(
        refusal(
            a.kv_put_with("resource", &json!("late"), &guarded("resource", old_token))
                .await
        ),
        (409, "stale_fencing_token".to_owned())
    );
    b.kv_put_with("resource", &json!("after"), &guarded("resource", new_token))
        .await
        .expect("the new holder's guarded write");
    let value = a
        .kv_get("resource", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(value["value"], "after");
    // Any mutating request can be fenced, not only KV: a task submission here.
    let task = |token: u64| TaskSubmit {
        kind: "k".into(),
        guard: Some(json!({ "lock": "resource", "fencing_token": token })),
        ..TaskSubmit::default()
    };
    let error = a.task_submit(&task(old_token)).await.unwrap_err();
    assert_eq!(
        (error.status(), error.code()),
        (Some(409), Some("stale_fencing_token")),
        "{error}"
    );
    assert_eq!(error.api().unwrap().detail("current_token"), new_token);
    b.task_submit(&task(new_token))
        .await
        .expect("a current guard's submit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_crash_during_waits_loses_no_waiter_and_no_grant() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3, Options::default()).await;
    let urls: Vec<String> = (1..=3).map(|id| cluster.url(id)).collect();
    let first = cluster.api(1);
    let holder = session(&first, 60_000).await;
    let granted = first
        .lock_acquire("baton", &acquire(holder, 0))
        .await
        .unwrap();
    let holder_token = granted.fencing_token;

    // Five waiters through every node; each retries its acquire through the crash
    // (a retry resumes its queued waiter) and passes the baton on when granted.
    let grants: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let mut waiters = Vec::new();
    for _ in 0..5 {
        let me = session(&cluster.api(2), 60_000).await;
        let grants = grants.clone();
        let apis = common::apis(&urls, Duration::from_secs(30));
        waiters.push(tokio::spawn(async move {
            let limit = Duration::from_secs(60);
            let granted = definite(&apis, "acquire", limit, |api| async move {
                api.lock_acquire("baton", &acquire(me, 20_000)).await
            })
            .await
            .expect("granted");
            let token = granted.fencing_token;
            grants.lock().unwrap().push((me, token));
            definite(&apis, "release", limit, |api| async move {
                api.lock_release("baton", &release(me, token)).await
            })
            .await
            .expect("released");
        }));
    }
    let queued = wait_until(Duration::from_secs(10), || async {
        let lock = first
            .lock_get("baton", Consistency::Linearizable)
            .await
            .ok()?;
        (lock["waiters"].as_array()?.len() == 5).then_some(())
    })
    .await;
    assert!(queued.is_some(), "the five waiters never queued");
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    cluster.kill(leader);
    let survivors: Vec<Client> = cluster
        .running()
        .iter()
        .map(|id| cluster.api(*id))
        .collect();
    definite(
        &survivors,
        "release",
        Duration::from_secs(60),
        |api| async move {
            api.lock_release("baton", &release(holder, holder_token))
                .await
        },
    )
    .await
    .expect("the holder released");
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
    let lock = survivors[0]
        .lock_get("baton", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        (lock["holders"].clone(), lock["waiters"].clone()),
        (json!([]), json!([])),
        "{lock}"
    );
}
