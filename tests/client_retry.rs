//! The multi-endpoint client (`Client::builder`) against real nodes: it follows the
//! leader, skips a dead endpoint, retries a write whose first attempt was lost with
//! the same `request_id` so it applies once, and its `Session` goes Live → Jeopardy
//! → Expired locally before the server expires the session.

mod common;

use std::time::Duration;

use common::{Cluster, Options};
use conclave_client::{Client, Consistency, Session, SessionCreate, SessionOptions, SessionState};
use serde_json::json;

/// A builder-made client of nodes `ids` (in that order) with the admin token.
fn client_of(cluster: &Cluster, ids: &[u64]) -> conclave_client::ClientBuilder {
    Client::builder()
        .endpoints(ids.iter().map(|&id| cluster.url(id)))
        .token(common::admin_token())
        .timeout(Duration::from_secs(40))
}

fn followers(cluster: &Cluster, leader: u64) -> Vec<u64> {
    cluster
        .running()
        .into_iter()
        .filter(|&id| id != leader)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_follower_or_behind_a_dead_endpoint_writes_and_learns_the_leader() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let follower = followers(&cluster, leader)[0];
    // Given only a follower: the write is forwarded, and the leader hint (with the
    // member list the follower serves) moves later calls to the leader.
    let client = client_of(&cluster, &[follower]).build().unwrap();
    let written = client.kv_put("lead/a", &json!(1)).await.unwrap();
    assert!(written.version > 0);
    assert_eq!(client.endpoints().len(), 3, "{:?}", client.endpoints());
    assert_eq!(
        client.current_endpoint().as_str().trim_end_matches('/'),
        cluster.url(leader)
    );
    // A list whose first endpoint refuses connections.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let client = Client::builder()
        .endpoints([dead, cluster.url(follower)])
        .token(common::admin_token())
        .build()
        .unwrap();
    let written = client.kv_put("lead/b", &json!(2)).await.unwrap();
    let entry = client
        .kv_get("lead/b", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(entry["version"], written.version);
    assert!(client.retries() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_first_attempt_is_lost_is_retried_with_its_request_id_and_applies_once() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let mut order = vec![leader];
    order.extend(followers(&cluster, leader));
    let client = client_of(&cluster, &order)
        .attempt_timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    client.kv_put("once/warm", &json!(0)).await.unwrap();
    let retries_before = client.retries();
    // The leader freezes: the write's first attempt reaches its socket and gets no
    // answer (a lost connection, outcome unknown); the retry goes to a follower with
    // the same request_id and applies at the new leader.
    cluster.signal(leader, "STOP");
    let written = client.kv_put("once/key", &json!("v")).await;
    cluster.signal(leader, "CONT");
    let written = written.expect("the retried write applied");
    assert!(
        client.retries() > retries_before,
        "the first attempt was retried"
    );
    // Once the old leader caught up (it may have proposed the buffered first attempt
    // when it woke: the request_id makes that a no-op), the key was written once:
    // its version is the create's.
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    client.kv_put("once/after", &json!(1)).await.unwrap();
    for id in cluster.running() {
        let api = cluster.api(id);
        common::wait_until(Duration::from_secs(20), || async {
            api.kv_get("once/after", Consistency::Stale).await.ok()
        })
        .await
        .unwrap_or_else(|| panic!("node {id} applied the later write"));
        let entry = api.kv_get("once/key", Consistency::Stale).await.unwrap();
        assert_eq!(
            (entry["version"].as_u64(), entry["create_index"].as_u64()),
            (Some(written.version), Some(written.version)),
            "node {id}: {entry}"
        );
    }
    // The same with a caller's request_id: the outcome is recorded once under it.
    cluster.kill(leader);
    let options = conclave_client::KvPut {
        request_id: Some("client-retry-1".into()),
        ..Default::default()
    };
    let written = client
        .kv_put_with("once/named", &json!(1), &options)
        .await
        .unwrap();
    let outcome = client
        .request_get("client-retry-1", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        (outcome["applied"].as_bool(), outcome["index"].as_u64()),
        (Some(true), Some(written.index)),
        "{outcome}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_endpoints_are_unreachable_goes_jeopardy_then_expired_before_the_server_expires_it(
) {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let follower = followers(&cluster, leader)[0];
    // The agent reaches the cluster only through one follower.
    let client = client_of(&cluster, &[follower])
        .discover(false)
        .build()
        .unwrap();
    let create = SessionCreate {
        name: "jeopardy".into(),
        capacity: Some(0),
        ttl_ms: Some(3_000),
        ..SessionCreate::default()
    };
    let session = Session::create(&client, &create, SessionOptions::default())
        .await
        .unwrap();
    let mut states = session.states();
    let recorder = tokio::spawn(async move {
        let mut seen = vec![*states.borrow_and_update()];
        while states.changed().await.is_ok() {
            let state = *states.borrow_and_update();
            seen.push(state);
            if state == SessionState::Expired {
                break;
            }
        }
        seen
    });
    // A renewal went through while the follower was up.
    let first_deadline = session.local_deadline();
    common::wait_until(Duration::from_secs(10), || async {
        (session.local_deadline() > first_deadline).then_some(())
    })
    .await
    .expect("a keepalive was acknowledged");
    let guard = session.lock("jeopardy/lock").await.unwrap();
    cluster.signal(follower, "STOP");
    tokio::time::timeout(Duration::from_secs(20), session.expired())
        .await
        .expect("the session expired locally");
    // Its lock counts as lost here at once.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), guard.lost()).await,
        Ok(conclave_client::LockLoss::SessionExpired)
    );
    // The server has not expired it yet: the local deadline comes a margin early.
    let admin = cluster.api(leader);
    let view = admin
        .session_get(session.id(), Consistency::Linearizable)
        .await
        .expect("still live on the server when the client gave it up");
    assert_eq!(view["session_id"].as_u64(), Some(session.id()));
    let lock = admin
        .lock_get("jeopardy/lock", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        lock["holders"][0]["session_id"].as_u64(),
        Some(session.id()),
        "{lock}"
    );
    let seen = recorder.await.unwrap();
    assert_eq!(
        seen,
        [
            SessionState::Live,
            SessionState::Jeopardy,
            SessionState::Expired
        ]
    );
    // And then the server expires it, without keepalives.
    let gone = common::wait_until(Duration::from_secs(20), || async {
        let result = admin
            .session_get(session.id(), Consistency::Linearizable)
            .await;
        (result.err()?.code() == Some("session_not_found")).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the server expired the session");
    cluster.signal(follower, "CONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_jeopardy_is_live_again_when_a_renewal_gets_through() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let follower = followers(&cluster, leader)[0];
    let client = client_of(&cluster, &[follower])
        .discover(false)
        .build()
        .unwrap();
    let create = SessionCreate {
        name: "recovers".into(),
        capacity: Some(0),
        ttl_ms: Some(6_000),
        ..SessionCreate::default()
    };
    let session = Session::create(&client, &create, SessionOptions::default())
        .await
        .unwrap();
    let mut states = session.states();
    cluster.signal(follower, "STOP");
    tokio::time::timeout(
        Duration::from_secs(20),
        states.wait_for(|state| *state != SessionState::Live),
    )
    .await
    .expect("a state change")
    .unwrap();
    assert_eq!(session.state(), SessionState::Jeopardy);
    // The node comes back before the local deadline: a renewal gets through.
    cluster.signal(follower, "CONT");
    tokio::time::timeout(
        Duration::from_secs(20),
        states.wait_for(|state| *state != SessionState::Jeopardy),
    )
    .await
    .expect("a state change")
    .unwrap();
    assert_eq!(session.state(), SessionState::Live);
    session.close().await.unwrap();
}
