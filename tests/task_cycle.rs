//! A task cycle in two requests (issue #16): `complete` / `fail` with `claim_next`
//! on real processes, through a follower. The next task is claimed in the same
//! command when one is ready (its claim index is the completion's), long-polled
//! when none is, and never when the completion is refused.

mod common;

use std::time::Duration;

use common::{refusal, wait_until, Cluster, Options};
use conclave_client::{Client, Consistency, SessionCreate, TaskComplete, TaskFail, TaskSubmit};

const LEADER_WAIT: Duration = Duration::from_secs(20);

async fn submit(api: &Client, kind: &str) -> u64 {
    let submit = TaskSubmit {
        kind: kind.into(),
        max_attempts: Some(1),
        ..TaskSubmit::default()
    };
    api.task_submit(&submit).await.expect("submitted").task_id
}

fn complete(fencing_token: u64, result: &str) -> TaskComplete {
    TaskComplete {
        fencing_token,
        result: Some(result.into()),
        ..TaskComplete::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_with_claim_next_claims_in_the_same_command_long_polls_and_refuses_whole() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let api = cluster.api(follower);
    // A fresh cluster upgrades itself to format 8 (FinishAndClaim) at once.
    wait_until(LEADER_WAIT, || async {
        let view = api.cluster_info().await.ok()?;
        (view["format"] == 8).then_some(())
    })
    .await
    .expect("the cluster reaches format 8");

    let create = SessionCreate {
        name: "worker".into(),
        capacity: Some(1),
        ttl_ms: Some(60_000),
        ..SessionCreate::default()
    };
    let worker = api.session_create(&create).await.unwrap().session_id;
    let [first, second, third] = [
        submit(&api, "a").await,
        submit(&api, "b").await,
        submit(&api, "c").await,
    ];
    let claimed = api.task_claim(worker, 0).await.unwrap().expect("first");
    assert_eq!(claimed.task["task_id"], first);

    // 1. Capacity 1: completing frees it, the second is assigned and claimed by
    //    the same command (same index), its view and a fresh token in `next`.
    let done = api
        .task_complete_and_claim(first, &complete(claimed.fencing_token, "one"), 0)
        .await
        .unwrap();
    assert_eq!((done.task_id, done.state.as_str()), (first, "succeeded"));
    let next = done.next.expect("the second task");
    assert_eq!(next.task["task_id"], second);
    assert_eq!(
        next.index, done.index,
        "claimed in the completion's command"
    );
    assert_eq!(next.fencing_token, done.index);
    assert_eq!(next.task["state"], "assigned");
    assert_eq!(next.task["claimed"], true);

    // 2. A stale token refuses the whole: nothing completed, nothing claimed.
    let stale = api
        .task_complete_and_claim(second, &complete(next.fencing_token + 1_000, "x"), 0)
        .await;
    assert_eq!(refusal(stale).0, 409);
    let view = api
        .task_get(second, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(view["state"], "assigned");
    let view = api
        .task_get(third, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(view["state"], "queued", "{view}");

    // 3. A fail (not retryable: dead) with claim_next claims the third.
    let fail = TaskFail {
        fencing_token: next.fencing_token,
        error: "no".into(),
        retryable: Some(false),
        ..TaskFail::default()
    };
    let failed = api.task_fail_and_claim(second, &fail, 0).await.unwrap();
    assert_eq!(failed.state, "dead");
    let next = failed.next.expect("the third task");
    assert_eq!(next.task["task_id"], third);

    // 4. Nothing ready and no wait: completed, `next` is null.
    let done = api
        .task_complete_and_claim(third, &complete(next.fencing_token, "three"), 0)
        .await
        .unwrap();
    assert_eq!((done.state.as_str(), done.next), ("succeeded", None));

    // 5. Nothing ready with a wait: the request long-polls until a submit through
    //    another node is assigned, and claims it.
    let fourth = submit(&api, "d").await;
    let claimed = api.task_claim(worker, 0).await.unwrap().expect("fourth");
    let other = cluster.api(leader);
    let waiting = {
        let api = api.clone();
        let token = claimed.fencing_token;
        tokio::spawn(async move {
            api.task_complete_and_claim(fourth, &complete(token, "four"), 20_000)
                .await
        })
    };
    // The completion is applied (the long poll has begun) before the fifth exists.
    wait_until(LEADER_WAIT, || async {
        let view = other
            .task_get(fourth, Consistency::Linearizable)
            .await
            .ok()?;
        (view["state"] == "succeeded").then_some(())
    })
    .await
    .expect("the fourth completed");
    let fifth = submit(&other, "e").await;
    let done = waiting.await.unwrap().unwrap();
    let next = done.next.expect("the fifth, claimed by the long poll");
    assert_eq!(next.task["task_id"], fifth);
    assert!(next.index > done.index, "claimed by a later command");

    // 6. Unknown fields of claim_next are refused like any other body's.
    let (status, body) = common::send(
        cluster
            .http
            .post(format!(
                "{}/v1/tasks/{fifth}/complete",
                cluster.url(follower)
            ))
            .json(&serde_json::json!({
                "fencing_token": next.fencing_token,
                "claim_next": {"wait_ms": 0, "session": 1},
            })),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &"invalid_request".into()),
        "{body}"
    );
}
