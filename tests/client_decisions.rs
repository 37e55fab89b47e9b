//! The client's calls for proposals, `/v1/txn`, two-phase commit, the room lists,
//! `/v1/debug/state` and `/metrics` against three real `conclave` processes, all
//! through one builder-made client of a follower that does not follow the leader
//! (every write is forwarded by that follower). Waits are the API's own `wait_ms`
//! or condition polls, never fixed sleeps.

mod common;

use std::time::{Duration, Instant};

use common::{refusal, Cluster, Options};
use conclave_client::{
    BarrierWait, Campaign, Client, Consistency, LockAcquire, ProposalCreate, ProposalList,
    RoomList, Rule, SemaphoreAcquire, Tally, TwoPhaseCreate, TwoPhaseList, TwoPhaseVote, Txn,
    TxnCompare, TxnOp, Vote,
};
use serde_json::{json, Value};

/// A client of node `id` only, with retries and generated request ids, that stays
/// on that node (no leader discovery), so a follower forwards every write.
fn client_of(cluster: &Cluster, id: u64, timeout: Duration) -> Client {
    Client::builder()
        .endpoint(cluster.url(id))
        .token(common::admin_token())
        .discover(false)
        .timeout(timeout)
        .build()
        .unwrap()
}

/// The `field` of every item of a list page.
fn field_of_items<'a>(page: &'a Value, field: &str) -> Vec<&'a Value> {
    let items = page["items"].as_array().expect("a page has items");
    items.iter().map(|item| &item[field]).collect()
}

/// The sum of the `conclave_decisions_total` series of `kind` and `outcome`.
fn decisions(metrics: &str, kind: &str, outcome: &str) -> u64 {
    let (kind, outcome) = (format!("kind=\"{kind}\""), format!("outcome=\"{outcome}\""));
    metrics
        .lines()
        .filter(|line| line.starts_with("conclave_decisions_total{"))
        .filter(|line| line.contains(&kind) && line.contains(&outcome))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_client_runs_proposals_txns_two_phase_commits_and_room_lists() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let client = client_of(&cluster, follower, Duration::from_secs(30));
    let linear = Consistency::Linearizable;

    // Proposals: create, vote (a repeat is idempotent, a change refused), a waiting
    // read woken by the deciding vote, lists by state.
    let create = ProposalCreate {
        title: "ship 1.2".into(),
        payload: Some(json!({"release": "1.2"})),
        voters: vec!["alice".into(), "bob".into(), "carol".into()],
        rule: Rule::Threshold(2),
        deadline_ms: 60_000,
        ..ProposalCreate::default()
    };
    let created = client.proposal_create(&create).await.unwrap();
    assert_eq!(
        (created.state.as_str(), created.proposal_id),
        ("open", created.index)
    );
    let id = created.proposal_id;
    let one_yes = Tally {
        yes: 1,
        no: 0,
        abstain: 0,
    };
    let first = client
        .proposal_vote(id, "alice", Vote::Yes, None)
        .await
        .unwrap();
    assert_eq!((first.state.as_str(), first.tally), ("open", one_yes));
    let again = client
        .proposal_vote(id, "alice", Vote::Yes, Some("alice-again"))
        .await
        .unwrap();
    assert_eq!(
        (again.state.as_str(), again.tally),
        ("open", one_yes),
        "the same vote again"
    );
    let changed = client.proposal_vote(id, "alice", Vote::No, None).await;
    assert_eq!(refusal(changed), (409, "already_voted".into()));
    // A wait longer than the client's whole timeout still gets its answer: the
    // query's wait_ms extends the call's deadline.
    let short = client_of(&cluster, follower, Duration::from_secs(1));
    let started = Instant::now();
    let still_open = short
        .proposal_get(id, Some(Duration::from_millis(2500)), linear)
        .await
        .unwrap();
    assert_eq!(still_open["state"], "open", "{still_open}");
    assert!(started.elapsed() >= Duration::from_millis(2500));
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .proposal_get(id, Some(Duration::from_secs(30)), Consistency::Stale)
                .await
        })
    };
    let deciding = client
        .proposal_vote(id, "bob", Vote::Yes, None)
        .await
        .unwrap();
    assert_eq!(deciding.state, "accepted");
    let view = waiter.await.unwrap().unwrap();
    assert_eq!(
        (view["state"].as_str(), view["decided_at_index"].as_u64()),
        (Some("accepted"), Some(deciding.index)),
        "{view}"
    );
    let by_state = |state: &str| ProposalList {
        state: Some(state.into()),
        ..ProposalList::default()
    };
    let accepted = client.proposal_list(&by_state("accepted")).await.unwrap();
    assert_eq!(field_of_items(&accepted, "proposal_id"), [&json!(id)]);
    let open = client.proposal_list(&by_state("open")).await.unwrap();
    assert!(field_of_items(&open, "proposal_id").is_empty(), "{open}");
    let awaiting = ProposalList {
        voter: Some("carol".into()),
        awaiting: true,
        ..ProposalList::default()
    };
    let page = client.proposal_list(&awaiting).await.unwrap();
    assert!(field_of_items(&page, "proposal_id").is_empty(), "{page}");

    // Transactions: a failed compare takes the failure branch; then one succeeds.
    let written = client.kv_put("txn/a", &json!(1)).await.unwrap();
    let put = |key: &str, value: Value| TxnOp::Put {
        key: key.into(),
        value,
        if_version: None,
        session_id: None,
    };
    let stale = Txn {
        compare: vec![TxnCompare::KeyVersion {
            key: "txn/a".into(),
            version: written.version + 1000,
        }],
        success: vec![put("txn/a", json!(2))],
        failure: vec![put("txn/else", json!("taken"))],
        request_id: None,
    };
    let otherwise = client.txn(&stale).await.unwrap();
    assert!(!otherwise.succeeded);
    assert_eq!(otherwise.results, [json!({"version": otherwise.index})]);
    let taken = client.kv_get("txn/else", linear).await.unwrap();
    assert_eq!(taken["value"], "taken", "{taken}");
    let fresh = Txn {
        compare: vec![
            TxnCompare::KeyVersion {
                key: "txn/a".into(),
                version: written.version,
            },
            TxnCompare::KeyValue {
                key: "txn/a".into(),
                value: json!(1),
            },
        ],
        success: vec![
            put("txn/a", json!(2)),
            TxnOp::Delete {
                key: "txn/else".into(),
                if_version: None,
            },
        ],
        ..Txn::default()
    };
    let applied = client.txn(&fresh).await.unwrap();
    assert!(applied.succeeded);
    assert_eq!(
        applied.results,
        [json!({"version": applied.index}), json!({"deleted": true})]
    );
    let read = client.kv_get("txn/a", linear).await.unwrap();
    assert_eq!(
        (read["value"].clone(), read["version"].as_u64()),
        (json!(2), Some(applied.index))
    );
    assert_eq!(
        refusal(client.kv_get("txn/else", linear).await),
        (404, "key_not_found".into())
    );

    // Two-phase commit: one committed, one aborted, the acks, a participant's list.
    let two = |payload: Value| TwoPhaseCreate {
        participants: vec!["db".into(), "cache".into()],
        timeout_ms: 60_000,
        payload: Some(payload),
        ..TwoPhaseCreate::default()
    };
    let commit = client
        .twophase_create(&two(json!({"step": 1})))
        .await
        .unwrap();
    assert_eq!(
        (commit.state.as_str(), commit.id),
        ("preparing", commit.index)
    );
    let awaiting_db = TwoPhaseList {
        participant: Some("db".into()),
        awaiting: true,
        wait: Some(Duration::from_secs(5)),
        ..TwoPhaseList::default()
    };
    let page = client.twophase_list(&awaiting_db).await.unwrap();
    assert_eq!(field_of_items(&page, "id"), [&json!(commit.id)]);
    let voted = client
        .twophase_vote(commit.id, "db", TwoPhaseVote::Commit, None)
        .await
        .unwrap();
    assert_eq!(voted.state, "preparing");
    let early = client.twophase_ack(commit.id, "db", None).await;
    assert_eq!(refusal(early), (409, "not_decided".into()));
    let last = client
        .twophase_vote(commit.id, "cache", TwoPhaseVote::Commit, None)
        .await
        .unwrap();
    assert_eq!(last.state, "committed");
    let repeat = client
        .twophase_vote(commit.id, "cache", TwoPhaseVote::Commit, None)
        .await
        .unwrap();
    assert_eq!(repeat.state, "committed", "the same vote again");
    let changed = client
        .twophase_vote(commit.id, "cache", TwoPhaseVote::Abort, None)
        .await;
    assert_eq!(refusal(changed), (409, "already_voted".into()));
    let view = client
        .twophase_get(commit.id, Some(Duration::from_secs(10)), linear)
        .await
        .unwrap();
    assert_eq!(
        (view["state"].as_str(), view["votes"].clone()),
        (
            Some("committed"),
            json!({"db": "commit", "cache": "commit"})
        ),
        "{view}"
    );
    let abort = client
        .twophase_create(&two(json!({"step": 2})))
        .await
        .unwrap();
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .twophase_get(abort.id, Some(Duration::from_secs(30)), linear)
                .await
        })
    };
    client
        .twophase_vote(abort.id, "cache", TwoPhaseVote::Abort, None)
        .await
        .unwrap();
    let view = waiter.await.unwrap().unwrap();
    assert_eq!(
        (view["state"].as_str(), view["reason"].as_str()),
        (Some("aborted"), Some("vote")),
        "{view}"
    );
    let aborted_for_db = TwoPhaseList {
        participant: Some("db".into()),
        state: Some("aborted".into()),
        ..TwoPhaseList::default()
    };
    let page = client.twophase_list(&aborted_for_db).await.unwrap();
    assert_eq!(field_of_items(&page, "id"), [&json!(abort.id)]);
    for id in [commit.id, abort.id] {
        let acked = client.twophase_ack(id, "db", None).await.unwrap();
        assert!(!acked.removed, "{acked:?}");
        let acked = client.twophase_ack(id, "cache", None).await.unwrap();
        assert!(acked.removed, "{acked:?}");
        let gone = client.twophase_get(id, None, linear).await;
        assert_eq!(refusal(gone), (404, "transaction_not_found".into()));
    }

    // Room lists: one resource of each room, two locks paged one at a time.
    let session = common::observer_session(&client, "lister", 60_000).await;
    for name in ["list/lock-1", "list/lock-2", "other/lock"] {
        let acquire = LockAcquire {
            session_id: session,
            ..LockAcquire::default()
        };
        client.lock_acquire(name, &acquire).await.unwrap();
    }
    let permits = SemaphoreAcquire {
        session_id: session,
        limit: 2,
        ..SemaphoreAcquire::default()
    };
    client
        .semaphore_acquire("list/pool", &permits)
        .await
        .unwrap();
    let arrive = BarrierWait {
        session_id: session,
        parties: 2,
        wait_ms: Some(0),
    };
    let arrived = client.barrier_wait("list/gate", &arrive).await.unwrap();
    assert!(!arrived.released, "{arrived:?}");
    let campaign = Campaign {
        session_id: session,
        ..Campaign::default()
    };
    assert!(
        client
            .election_campaign("list/chief", &campaign)
            .await
            .unwrap()
            .leader
    );
    let page_of = |after: Option<&str>| RoomList {
        prefix: Some("list/".into()),
        after: after.map(Into::into),
        limit: Some(1),
        consistency: linear,
    };
    let page = client.lock_list(&page_of(None)).await.unwrap();
    assert_eq!(
        (field_of_items(&page, "name"), &page["next_after"]),
        (vec![&json!("list/lock-1")], &json!("list/lock-1")),
        "{page}"
    );
    let page = client
        .lock_list(&page_of(Some("list/lock-1")))
        .await
        .unwrap();
    assert_eq!(
        (field_of_items(&page, "name"), &page["next_after"]),
        (vec![&json!("list/lock-2")], &Value::Null),
        "{page}"
    );
    assert_eq!(page["items"][0]["holders"][0]["session_id"], session);
    let all = RoomList {
        prefix: Some("list/".into()),
        ..RoomList::default()
    };
    let semaphores = client.semaphore_list(&all).await.unwrap();
    assert_eq!(field_of_items(&semaphores, "name"), [&json!("list/pool")]);
    let barriers = client.barrier_list(&all).await.unwrap();
    assert_eq!(field_of_items(&barriers, "name"), [&json!("list/gate")]);
    let elections = client.election_list(&all).await.unwrap();
    assert_eq!(field_of_items(&elections, "name"), [&json!("list/chief")]);

    // Node-local reads go to the follower itself: its state digest and metrics,
    // where it counted the decisions it applied.
    let digest = client.debug_state().await.unwrap();
    assert_eq!(digest.node_id, follower);
    assert_eq!(digest.state_hash.len(), 16, "{digest:?}");
    let counted = common::wait_until(Duration::from_secs(10), || async {
        let text = client.metrics_text().await.ok()?;
        let node = format!("conclave_node_id {follower}");
        let seen = (
            text.lines().any(|line| line == node),
            decisions(&text, "proposal", "accepted"),
            decisions(&text, "2pc", "committed"),
            decisions(&text, "2pc", "aborted"),
        );
        (seen == (true, 1, 1, 1)).then_some(seen)
    })
    .await;
    assert!(counted.is_some(), "{:?}", client.metrics_text().await);
}
