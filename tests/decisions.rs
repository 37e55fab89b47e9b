//! Proposals and two-phase commit on three real `conclave` processes with auth on:
//! each participant and voter uses its own token (its subject is its name) and talks
//! to its own node, through the typed client. Waits are the API's own `wait_ms` or
//! condition polls, never fixed sleeps.

mod common;

use std::time::Duration;

use common::{refusal, Cluster, Options};
use conclave_client::{
    Client, Consistency, LockAcquire, Party, ProposalCreate, ProposalList, Rule, SessionCreate,
    TaskSubmit, TwoPhaseCreate, TwoPhaseList, TwoPhaseVote, Txn, TxnCompare, TxnOp, Vote,
};
use serde_json::json;

const LINEAR: Consistency = Consistency::Linearizable;

/// A client of the node at `base` whose every call carries `subject`'s token with
/// `scopes`. Like a hand-made request it sends each call once and stays on that
/// node, so a follower forwards what the leader must serve.
fn client_of(base: &str, subject: &str, scopes: &[&str]) -> Client {
    Client::builder()
        .endpoint(base)
        .token(common::token(subject, scopes))
        .retry(false)
        .discover(false)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_commit_aborts_on_one_abort_and_on_silence_and_survives_a_leader_kill() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3, Options::default()).await;
    let names = ["p1", "p2", "p3", "p4", "p5"];
    let urls: Vec<String> = (1..=3).map(|n| cluster.url(n)).collect();
    let url = |i: usize| urls[i % 3].clone();
    // Participant `i` talking to the node at `base`.
    let participant = |i: usize, base: &str| client_of(base, names[i], &["agent:txn"]);
    let coordinator = |base: &str| client_of(base, "coordinator", &["agent:txn"]);
    let parties = |names: &[&str]| names.iter().map(|&name| Party::from(name)).collect();

    // 1. Five participants; the fourth votes abort: everyone observes `aborted`.
    let create = TwoPhaseCreate {
        participants: parties(&names),
        timeout_ms: 60_000,
        payload: Some(json!({"step": 1})),
        ..TwoPhaseCreate::default()
    };
    let id = coordinator(&url(0))
        .twophase_create(&create)
        .await
        .unwrap()
        .id;
    for (i, name) in names.iter().enumerate() {
        let vote = if i == 3 {
            TwoPhaseVote::Abort
        } else {
            TwoPhaseVote::Commit
        };
        let voted = participant(i, &url(i))
            .twophase_vote(id, *name, vote, None)
            .await;
        if i <= 3 {
            assert!(voted.is_ok(), "{name} voting: {voted:?}");
        } else {
            assert_eq!(refusal(voted), (409, "transaction_decided".into()));
        }
    }
    for i in 0..names.len() {
        let view = participant(i, &url(i))
            .twophase_get(id, Some(Duration::from_secs(20)), LINEAR)
            .await
            .unwrap();
        assert_eq!(
            (view["state"].as_str(), view["reason"].as_str()),
            (Some("aborted"), Some("vote")),
            "{view}"
        );
    }
    // Nobody votes as another: p1's token cannot cast p2's vote (nor change its own).
    let as_other = participant(0, &url(1))
        .twophase_vote(id, "p2", TwoPhaseVote::Abort, None)
        .await;
    assert_eq!(refusal(as_other), (403, "not_the_party".into()));
    let changed = participant(0, &url(0))
        .twophase_vote(id, "p1", TwoPhaseVote::Abort, None)
        .await;
    assert_eq!(refusal(changed), (409, "already_voted".into()));
    // Each finds the decision awaiting its ack, acks, and the record goes with the last.
    for (i, name) in names.iter().enumerate() {
        let client = participant(i, &url(i));
        let awaiting = TwoPhaseList {
            participant: Some((*name).into()),
            awaiting: true,
            wait: Some(Duration::from_secs(5)),
            ..TwoPhaseList::default()
        };
        let page = client.twophase_list(&awaiting).await.unwrap();
        assert_eq!(page["items"][0]["id"], id, "{page}");
        let acked = client.twophase_ack(id, *name, None).await.unwrap();
        assert_eq!(acked.removed, i == 4, "{acked:?}");
    }
    let gone = coordinator(&url(2)).twophase_get(id, None, LINEAR).await;
    assert_eq!(
        refusal(gone),
        (404, "transaction_not_found".into()),
        "removed once all acked"
    );

    // 2. One participant stays silent: `aborted` at the timeout, by the replicated tick.
    let create = TwoPhaseCreate {
        participants: parties(&["p1", "p2"]),
        timeout_ms: 1_500,
        ..TwoPhaseCreate::default()
    };
    let silent = coordinator(&url(1))
        .twophase_create(&create)
        .await
        .unwrap()
        .id;
    participant(0, &url(0))
        .twophase_vote(silent, "p1", TwoPhaseVote::Commit, None)
        .await
        .unwrap();
    let view = participant(0, &url(2))
        .twophase_get(silent, Some(Duration::from_secs(20)), LINEAR)
        .await
        .unwrap();
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
    let create = TwoPhaseCreate {
        participants: parties(&["p1", "p2", "p3"]),
        timeout_ms: 60_000,
        ..TwoPhaseCreate::default()
    };
    let across = coordinator(&base(others[0]))
        .twophase_create(&create)
        .await
        .unwrap()
        .id;
    for (i, name) in ["p1", "p2"].iter().enumerate() {
        let voted = participant(i, &base(others[i % 2]))
            .twophase_vote(across, *name, TwoPhaseVote::Commit, None)
            .await
            .unwrap();
        assert_eq!(voted.state, "preparing", "{voted:?}");
    }
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader);
    // p2's retry of its own vote across the failover is answered, not counted twice.
    let again = participant(1, &base(others[1]))
        .twophase_vote(across, "p2", TwoPhaseVote::Commit, None)
        .await
        .unwrap();
    assert_eq!(again.state, "preparing", "{again:?}");
    let last = participant(2, &base(others[0]))
        .twophase_vote(across, "p3", TwoPhaseVote::Commit, None)
        .await
        .unwrap();
    assert_eq!(last.state, "committed", "{last:?}");
    cluster.spawn(leader);
    let mut seen = Vec::new();
    for (i, node) in [others[0], others[1], leader].into_iter().enumerate() {
        // The restarted node serves a stale read once it has caught up.
        let client = participant(i, &base(node));
        let view = common::wait_until(Duration::from_secs(20), || async {
            // Until the restarted node listens again, its connection is refused.
            let view = client
                .twophase_get(across, None, Consistency::Stale)
                .await
                .ok()?;
            (view["state"] != "preparing").then_some(view)
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
    // `subject`'s client of node `node`.
    let agent =
        |subject: &str, node: u64| client_of(&cluster.url(node), subject, &["agent:proposals"]);
    let reader = |node: u64| client_of(&cluster.url(node), "auditor", &["read"]);
    let create = ProposalCreate {
        title: "deploy 1.2".into(),
        payload: Some(json!({"release": "1.2"})),
        voters: vec!["alice".into(), "bob".into(), "carol".into()],
        rule: Rule::Threshold(2),
        deadline_ms: 60_000,
        ..ProposalCreate::default()
    };
    let id = agent("planner", 1)
        .proposal_create(&create)
        .await
        .unwrap()
        .proposal_id;
    // A waiter on another node is woken by the deciding vote.
    let waiter = {
        let reader = reader(3);
        tokio::spawn(async move {
            reader
                .proposal_get(id, Some(Duration::from_secs(30)), LINEAR)
                .await
        })
    };
    let awaiting = ProposalList {
        voter: Some("alice".into()),
        awaiting: true,
        ..ProposalList::default()
    };
    let page = agent("alice", 2).proposal_list(&awaiting).await.unwrap();
    assert_eq!(page["items"][0]["proposal_id"].as_u64(), Some(id), "{page}");
    let vote = |subject: &str, node: u64, voter: &str, vote: Vote| {
        let (client, voter) = (agent(subject, node), voter.to_owned());
        async move { client.proposal_vote(id, voter, vote, None).await }
    };
    let as_other = vote("alice", 2, "bob", Vote::Yes).await;
    assert_eq!(refusal(as_other), (403, "not_the_party".into()));
    let stranger = vote("alice", 2, "mallory", Vote::Yes).await;
    assert_eq!(refusal(stranger), (403, "not_a_voter".into()));
    let voted = vote("alice", 2, "alice", Vote::Yes).await.unwrap();
    assert_eq!(
        (voted.state.as_str(), voted.tally.yes),
        ("open", 1),
        "{voted:?}"
    );
    let again = vote("alice", 1, "alice", Vote::Yes).await.unwrap();
    assert_eq!(again.tally.yes, 1, "the same vote again: {again:?}");
    let changed = vote("alice", 1, "alice", Vote::No).await;
    assert_eq!(refusal(changed), (409, "already_voted".into()));
    let deciding = vote("bob", 3, "bob", Vote::Yes).await.unwrap();
    assert_eq!(deciding.state, "accepted", "2 of 3 accepts: {deciding:?}");
    let view = waiter.await.unwrap().unwrap();
    assert_eq!(view["state"].as_str(), Some("accepted"), "{view}");
    let votes = view["tally"]["votes"].as_array().unwrap();
    let voters: Vec<(&str, &str)> = votes
        .iter()
        .map(|v| (v["voter"].as_str().unwrap(), v["cast_by"].as_str().unwrap()))
        .collect();
    assert_eq!(voters, vec![("alice", "alice"), ("bob", "bob")]);
    assert_eq!(view["decided_at_index"], votes[1]["index"]);
    let for_carol = vote("planner", 1, "carol", Vote::No).await;
    assert_eq!(refusal(for_carol).0, 403, "the planner is not carol");

    // Session voters: one session ends before voting; it abstains and the unanimous
    // proposal is accepted at once instead of waiting for its deadline.
    let (one, two) = (agent("agent-1", 1), agent("agent-2", 1));
    let mut sessions = Vec::new();
    for client in [&one, &two] {
        let create = SessionCreate {
            name: "voter".into(),
            ttl_ms: Some(60_000),
            ..SessionCreate::default()
        };
        sessions.push(client.session_create(&create).await.unwrap().session_id);
    }
    let create = ProposalCreate {
        title: "all agree?".into(),
        voters: sessions
            .iter()
            .map(|&session| Party::from(session))
            .collect(),
        voters_are_sessions: Some(true),
        rule: Rule::Unanimous,
        deadline_ms: 600_000,
        ..ProposalCreate::default()
    };
    let unanimous = agent("planner", 2)
        .proposal_create(&create)
        .await
        .unwrap()
        .proposal_id;
    let not_owner = agent("agent-2", 3)
        .proposal_vote(unanimous, sessions[0], Vote::Yes, None)
        .await;
    assert_eq!(refusal(not_owner), (403, "not_session_owner".into()));
    let voted = agent("agent-1", 3)
        .proposal_vote(unanimous, sessions[0], Vote::Yes, None)
        .await
        .unwrap();
    assert_eq!(voted.state, "open", "{voted:?}");
    agent("agent-2", 2).session_end(sessions[1]).await.unwrap();
    let view = reader(1)
        .proposal_get(unanimous, Some(Duration::from_secs(10)), LINEAR)
        .await
        .unwrap();
    assert_eq!(view["state"].as_str(), Some("accepted"), "{view}");
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
    let bad = ProposalCreate {
        title: "x".into(),
        voters: vec!["a".into()],
        rule: Rule::Threshold(2),
        deadline_ms: 1000,
        ..ProposalCreate::default()
    };
    let refused = agent("planner", 1).proposal_create(&bad).await;
    assert_eq!(refusal(refused), (400, "invalid_rule".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_applies_all_or_nothing_is_idempotent_and_checks_every_ops_scope() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let base = cluster.url(1);
    let admin = cluster.api(1);
    for (key, value) in [("acct/a", 10), ("acct/b", 0)] {
        admin.kv_put(key, &json!(value)).await.unwrap();
    }
    let version = |key: &'static str| {
        let admin = admin.clone();
        async move {
            admin.kv_get(key, LINEAR).await.unwrap()["version"]
                .as_u64()
                .unwrap()
        }
    };
    let put = |key: &str, value: i64| TxnOp::Put {
        key: key.into(),
        value: json!(value),
        if_version: None,
        session_id: None,
    };
    let bank = client_of(&base, "bank", &["agent:txn", "agent:kv:acct/"]);
    let transfer = Txn {
        compare: vec![
            TxnCompare::KeyVersion {
                key: "acct/a".into(),
                version: version("acct/a").await,
            },
            TxnCompare::KeyVersion {
                key: "acct/b".into(),
                version: version("acct/b").await,
            },
            TxnCompare::KeyValue {
                key: "acct/a".into(),
                value: json!(10),
            },
        ],
        success: vec![put("acct/a", 5), put("acct/b", 5)],
        failure: vec![],
        request_id: Some("transfer-1".into()),
    };
    let first = bank.txn(&transfer).await.unwrap();
    assert!(first.succeeded, "{first:?}");
    let index = first.index;
    assert_eq!(
        first.results,
        [json!({"version": index}), json!({"version": index})],
        "{first:?}"
    );
    // The same request again answers the same, applying nothing twice.
    let again = bank.txn(&transfer).await.unwrap();
    assert_eq!(again, first);
    // The same compares now fail: the (empty) failure branch is taken.
    let stale = Txn {
        request_id: Some("transfer-2".into()),
        ..transfer.clone()
    };
    let otherwise = bank.txn(&stale).await.unwrap();
    assert_eq!(
        (otherwise.succeeded, otherwise.results.is_empty()),
        (false, true),
        "{otherwise:?}"
    );
    assert_eq!(admin.kv_get("acct/a", LINEAR).await.unwrap()["value"], 5);

    // Every op and compare needs the scope its own route would.
    let outside = Txn {
        success: vec![put("other/x", 1)],
        ..Txn::default()
    };
    assert_eq!(refusal(bank.txn(&outside).await), (403, "forbidden".into()));
    let peek = Txn {
        compare: vec![TxnCompare::KeyExists {
            key: "secret/k".into(),
            exists: true,
        }],
        ..Txn::default()
    };
    assert_eq!(
        refusal(bank.txn(&peek).await).0,
        403,
        "a compare reads its key"
    );
    let no_txn = client_of(&base, "kv-only", &["agent:kv"]);
    assert_eq!(
        refusal(no_txn.txn(&Txn::default()).await).0,
        403,
        "the route needs agent:txn"
    );

    // A refused op aborts everything and names itself.
    let mut sessions = Vec::new();
    for name in ["h", "o"] {
        let create = SessionCreate {
            name: name.into(),
            ttl_ms: Some(60_000),
            ..SessionCreate::default()
        };
        sessions.push(admin.session_create(&create).await.unwrap().session_id);
    }
    let (holder, other) = (sessions[0], sessions[1]);
    let acquire = LockAcquire {
        session_id: holder,
        ..LockAcquire::default()
    };
    let held = admin.lock_acquire("db", &acquire).await.unwrap();
    let blocked = Txn {
        success: vec![
            put("acct/c", 1),
            TxnOp::AcquireLock {
                name: "db".into(),
                session_id: other,
                mode: None,
            },
        ],
        ..Txn::default()
    };
    let refused = admin.txn(&blocked).await.expect_err("lock held");
    assert_eq!(
        (
            refused.status(),
            refused.code(),
            refused.api().unwrap().detail("op_index").as_u64()
        ),
        (Some(409), Some("lock_held"), Some(1)),
        "{refused:?}"
    );
    assert_eq!(
        refusal(admin.kv_get("acct/c", LINEAR).await).0,
        404,
        "nothing applied"
    );
    // Ops of other rooms, with the lock's token as a compare (a fenced write).
    let token = held.fencing_token;
    let mixed = Txn {
        compare: vec![TxnCompare::LockToken {
            lock: "db".into(),
            fencing_token: token,
        }],
        success: vec![
            TxnOp::SubmitTask(TaskSubmit {
                kind: "k".into(),
                payload: Some(json!({"n": 1})),
                ..TaskSubmit::default()
            }),
            TxnOp::AcquireSemaphore {
                name: "pool".into(),
                session_id: other,
                permits: None,
                limit: 2,
            },
            TxnOp::ReleaseLock {
                name: "db".into(),
                session_id: holder,
                fencing_token: token,
            },
            TxnOp::Delete {
                key: "acct/b".into(),
                if_version: None,
            },
        ],
        ..Txn::default()
    };
    let applied = admin.txn(&mixed).await.unwrap();
    assert!(applied.succeeded, "{applied:?}");
    let results = &applied.results;
    assert!(
        results[0]["task_id"].is_u64() && results[1]["fencing_token"].is_u64(),
        "{applied:?}"
    );
    assert_eq!(
        (
            results[2]["released"].as_bool(),
            results[3]["deleted"].as_bool()
        ),
        (Some(true), Some(true)),
        "{applied:?}"
    );
    // Shape: two ops on one key are refused before anything is proposed.
    let twice = Txn {
        success: vec![
            put("acct/a", 1),
            TxnOp::Delete {
                key: "acct/a".into(),
                if_version: None,
            },
        ],
        ..Txn::default()
    };
    assert_eq!(
        refusal(admin.txn(&twice).await),
        (400, "invalid_txn".into())
    );
}
