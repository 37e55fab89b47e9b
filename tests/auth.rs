//! Authentication and authorization against a real node with `[auth] keys`: every
//! route of the route table (`server::routes::table`) is called with no token, a
//! malformed one, an expired one, one signed by another key, one of the wrong scope
//! or prefix, and the right one. Plus the membership scenario an attacker tried
//! (issue #11): adding a member at their own address without `admin`.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::{Cluster, Options};
use conclave::auth::Kind;
use conclave::server::routes::{self, Access, Param};
use reqwest::Method;

/// A concrete path for a route template, with names under the `jobs` prefix.
fn concrete(path: &str) -> String {
    path.replace("{*key}", "jobs/k1")
        .replace("{name}", "jobs-n1")
        .replace("{request_id}", "r1")
        .replace("{id}", "999")
}

/// The query a route's access reads its name from, if any.
fn query(access: Access) -> &'static str {
    match access {
        Access::ReadOf(_, Param::Query(_)) | Access::AgentOf(_, Param::Query(_)) => "?prefix=jobs",
        _ => "",
    }
}

/// A valid token whose scopes do not meet `access` (None: nothing is refused).
fn wrong_scope(access: Access) -> Option<String> {
    let other_prefix = |kind: Kind| format!("agent:{kind}:elsewhere/");
    let scopes = match access {
        Access::Public => return None,
        Access::Admin => vec!["agent".to_string(), "read".to_string(), "join".to_string()],
        Access::Join => vec!["agent".to_string(), "read".to_string()],
        Access::Read => vec![],
        Access::Agent => vec!["read".to_string()],
        Access::AgentKind(Kind::Tasks) => vec!["agent:kv".to_string(), "read".to_string()],
        Access::AgentKind(kind) => vec![format!("agent:{}", other_kind(kind))],
        // An agent of the right kind with another prefix (a `read` token would pass).
        Access::ReadOf(kind, _) => vec![other_prefix(kind)],
        Access::AgentOf(kind, _) => vec![other_prefix(kind), "read".to_string()],
    };
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    Some(common::token("wrong-scope", &scopes))
}

fn other_kind(kind: Kind) -> Kind {
    if kind == Kind::Kv {
        Kind::Locks
    } else {
        Kind::Kv
    }
}

async fn call(http: &reqwest::Client, method: &Method, url: &str, token: Option<&str>) -> u16 {
    let mut request = http.request(method.clone(), url).body("{}");
    request = request.header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", token);
    }
    request
        .send()
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_every_kind_of_wrong_token_and_admits_the_right_one() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let base = cluster.url(1);
    // A client without the harness's default admin token.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let keys = conclave::auth::Keys::new(&[common::AUTH_KEY.to_string()]).unwrap();
    let now = conclave::auth::token::now_s();
    let expired = keys
        .issue("late", &["admin".into()], now - 7_200, 60)
        .unwrap();
    let foreign = conclave::auth::Keys::new(&["another-cluster-signing-key-0123456789".into()])
        .unwrap()
        .issue("stranger", &["admin".into()], now, 600)
        .unwrap();
    let admin = format!("Bearer {}", common::admin_token());
    let mut checked = 0;
    for route in routes::table() {
        let url = format!("{base}{}{}", concrete(route.path), query(route.access));
        let method = &route.method;
        let what = format!("{method} {}", route.path);
        let right = call(&http, method, &url, Some(&admin)).await;
        assert!(
            right != 401 && right != 403,
            "{what}: the admin token was refused ({right})"
        );
        if route.access == Access::Public {
            let open = call(&http, method, &url, None).await;
            assert!(open != 401 && open != 403, "{what} is public ({open})");
            checked += 1;
            continue;
        }
        assert_eq!(
            call(&http, method, &url, None).await,
            401,
            "{what}: no token"
        );
        for malformed in ["Bearer not-a-jwt", "Basic YWRtaW46YWRtaW4=", "Bearer "] {
            let status = call(&http, method, &url, Some(malformed)).await;
            assert_eq!(status, 401, "{what}: {malformed:?}");
        }
        let status = call(&http, method, &url, Some(&format!("Bearer {expired}"))).await;
        assert_eq!(status, 401, "{what}: an expired token");
        let status = call(&http, method, &url, Some(&format!("Bearer {foreign}"))).await;
        assert_eq!(status, 401, "{what}: a token signed by another key");
        let wrong = wrong_scope(route.access).expect("a non-public route");
        let status = call(&http, method, &url, Some(&format!("Bearer {wrong}"))).await;
        assert_eq!(status, 403, "{what}: a token of the wrong scope or prefix");
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} routes in the table");
    // The refusals name their codes; an expired token says so.
    let response = http
        .get(format!("{base}/v1/cluster"))
        .header("authorization", format!("Bearer {expired}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers().get("www-authenticate").unwrap(),
        "Bearer"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "token_expired");
}

/// Regression (issue #11): `POST /v1/cluster/members` with an attacker's address
/// made the leader dial it with AppendEntries carrying the cluster secret. Now it
/// needs `admin`: without it the membership does not change and nobody is dialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_at_an_attackers_address_without_admin_is_refused_and_never_dialled() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let base = cluster.url(1);
    let attacker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    attacker.set_nonblocking(true).unwrap();
    let addr = attacker.local_addr().unwrap().to_string();
    let http = reqwest::Client::new();
    let body = serde_json::json!({ "id": 9, "addr": addr, "voter": false });
    let agent = common::token("agent-1", &["agent", "read"]);
    for token in [None, Some(agent.as_str())] {
        let mut request = http.post(format!("{base}/v1/cluster/members")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let status = request.send().await.unwrap().status().as_u16();
        assert!(status == 401 || status == 403, "refused, got {status}");
    }
    let info = cluster.status(1).await.expect("cluster info");
    let members = info["members"].as_array().unwrap();
    assert_eq!(
        members.len(),
        1,
        "the membership did not change: {members:?}"
    );
    assert!(
        matches!(attacker.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the leader dialled the attacker's address"
    );
}

/// A task's kind is what an agent's `tasks` prefix limits, checked on submit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_submits_only_tasks_of_its_kinds() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let base = cluster.url(1);
    let http = reqwest::Client::new();
    let agent = common::token("renderer", &["agent:tasks:render"]);
    let submit = |kind: &str| {
        http.post(format!("{base}/v1/tasks"))
            .bearer_auth(&agent)
            .json(&serde_json::json!({ "kind": kind }))
            .send()
    };
    assert_eq!(submit("render-frame").await.unwrap().status(), 200);
    let refused = submit("billing").await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
}

/// Cancel and retry name a task by id, not by kind; the caller's tasks prefix must
/// still cover the task's kind (it was enough to hold any `agent:tasks` scope).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_need_a_scope_covering_the_task_s_kind() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let base = cluster.url(1);
    let http = reqwest::Client::new();
    let billing = common::token("billing", &["agent:tasks:billing"]);
    let renderer = common::token("renderer", &["agent:tasks:render"]);
    let call = |method: Method, path: String, token: &str| {
        common::send(
            http.request(method, format!("{base}{path}"))
                .bearer_auth(token)
                .json(&serde_json::json!({})),
        )
    };
    let (status, submitted) = common::send(
        http.post(format!("{base}/v1/tasks"))
            .bearer_auth(&billing)
            .json(&serde_json::json!({"kind": "billing-run", "max_attempts": 1})),
    )
    .await;
    assert_eq!(status, 200, "{submitted}");
    let task = submitted["task_id"].as_u64().unwrap();
    for (method, path) in [
        (Method::DELETE, format!("/v1/tasks/{task}")),
        (Method::POST, format!("/v1/tasks/{task}/retry")),
    ] {
        let (status, body) = call(method.clone(), path.clone(), &renderer).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}: {body}"
        );
    }
    let (_, view) = call(Method::GET, format!("/v1/tasks/{task}"), &billing).await;
    assert_eq!(view["state"], "queued", "{view}");
    // The kind's own agent may cancel it; an unknown task is the state machine's 404.
    let (status, body) = call(Method::DELETE, format!("/v1/tasks/{task}"), &billing).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(Method::DELETE, "/v1/tasks/999999".into(), &renderer).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("task_not_found"))
    );
}

/// `/raft/*` has its own listener (issue #11: it shared the client listener, so
/// the two could not be firewalled apart). It takes only the cluster secret, never
/// a client token; the client listener serves no `/raft/*` route and the peer
/// listener no client route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_listener_takes_only_the_cluster_secret_and_serves_no_client_routes() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let (client_url, raft_url) = (cluster.url(1), cluster.node(1).raft_url());
    let http = reqwest::Client::new();
    let admin = common::admin_token();
    let format = conclave::codec::FORMAT_VERSION.to_string();
    let vote = |url: &str| {
        http.post(format!("{url}/raft/vote"))
            .header("x-conclave-target", "1")
            .header("x-conclave-format", &format)
            .header("x-conclave-cluster", &cluster.cluster_id)
            .body(vec![0xff])
    };
    let status = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.expect("sent");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    };
    let refused = (401, "unauthorized".to_string());
    assert_eq!(status(vote(&raft_url).bearer_auth(admin)).await, refused);
    assert_eq!(
        status(vote(&raft_url).header("x-conclave-secret", admin)).await,
        refused,
        "a client token is not the cluster secret"
    );
    assert_eq!(
        status(vote(&raft_url).header("x-conclave-secret", "wrong-secret-0123456789")).await,
        refused
    );
    let secret = vote(&raft_url).header("x-conclave-secret", common::SECRET);
    assert_eq!(
        status(secret).await.0,
        400,
        "the secret passes; the body does not decode"
    );
    let on_client = vote(&client_url).header("x-conclave-secret", common::SECRET);
    assert_eq!(
        status(on_client).await.0,
        404,
        "no /raft/* on the client listener"
    );
    let kv = http.get(format!("{raft_url}/v1/kv/x")).bearer_auth(admin);
    assert_eq!(
        status(kv).await.0,
        404,
        "no client route on the peer listener"
    );
}

/// Issue #11 hidden-edge finding: any client could release another session's lock,
/// keep it alive, end it or complete its task by naming the session id and fencing
/// token. A session is usable only with its creator's subject (or `admin`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_subjects_session_cannot_be_used() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let base = cluster.url(1);
    let http = reqwest::Client::new();
    let alice = common::token("alice", &["agent"]);
    let mallory = common::token("mallory", &["agent"]);
    let admin = common::admin_token();
    let call = |token: &str, method: Method, path: &str, body: Value| {
        let request = http.request(method, format!("{base}{path}"));
        common::send(request.bearer_auth(token).json(&body))
    };
    let (status, created) = call(
        &alice,
        Method::POST,
        "/v1/sessions",
        json!({"name": "alice-worker", "capabilities": ["gpu"], "ttl_ms": 60_000}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let session = created["session_id"].as_u64().unwrap();
    let (status, view) = call(
        &mallory,
        Method::GET,
        &format!("/v1/sessions/{session}"),
        json!({}),
    )
    .await;
    assert_eq!((status, view["owner"].clone()), (200, json!("alice")));
    let (status, lock) = call(
        &alice,
        Method::POST,
        "/v1/locks/L/acquire",
        json!({"session_id": session}),
    )
    .await;
    assert_eq!(status, 200, "{lock}");
    let fencing_token = lock["fencing_token"].as_u64().unwrap();
    let (status, _) = call(
        &alice,
        Method::POST,
        "/v1/tasks",
        json!({"kind": "k", "required_capabilities": ["gpu"]}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, claimed) = call(
        &alice,
        Method::POST,
        "/v1/tasks/claim",
        json!({"session_id": session, "wait_ms": 5000}),
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    let task = claimed["task"]["task_id"].as_u64().unwrap();
    let task_token = claimed["fencing_token"].as_u64().unwrap();

    let attempts = [
        (
            Method::POST,
            "/v1/locks/L/release".to_string(),
            json!({"session_id": session, "fencing_token": fencing_token}),
        ),
        (
            Method::POST,
            "/v1/locks/M/acquire".to_string(),
            json!({"session_id": session}),
        ),
        (
            Method::POST,
            format!("/v1/sessions/{session}/keepalive"),
            json!({}),
        ),
        (Method::DELETE, format!("/v1/sessions/{session}"), json!({})),
        (
            Method::PUT,
            "/v1/kv/eph".to_string(),
            json!({"value": 1, "session_id": session}),
        ),
        (
            Method::POST,
            "/v1/tasks/claim".to_string(),
            json!({"session_id": session}),
        ),
        (
            Method::POST,
            format!("/v1/tasks/{task}/complete"),
            json!({"fencing_token": task_token, "result": 1}),
        ),
        (
            Method::POST,
            format!("/v1/tasks/{task}/heartbeat"),
            json!({"fencing_token": task_token}),
        ),
        (
            Method::POST,
            "/v1/semaphores/S/acquire".to_string(),
            json!({"session_id": session, "limit": 2}),
        ),
        (
            Method::POST,
            "/v1/barriers/B/wait".to_string(),
            json!({"session_id": session, "parties": 2, "wait_ms": 0}),
        ),
        (
            Method::POST,
            "/v1/elections/E/campaign".to_string(),
            json!({"session_id": session, "value": "m"}),
        ),
    ];
    for (method, path, body) in &attempts {
        let (status, refused) = call(&mallory, method.clone(), path, body.clone()).await;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (403, Some("not_session_owner")),
            "{method} {path}: {refused}"
        );
    }
    // Nothing mallory tried took effect: the lock and the task are still alice's.
    let (_, lock_view) = call(&alice, Method::GET, "/v1/locks/L", json!({})).await;
    assert_eq!(
        lock_view["holders"][0]["fencing_token"],
        json!(fencing_token),
        "{lock_view}"
    );
    let (_, task_view) = call(&alice, Method::GET, &format!("/v1/tasks/{task}"), json!({})).await;
    assert_eq!(task_view["state"], "assigned", "{task_view}");
    let (_, missing) = call(&alice, Method::GET, "/v1/kv/eph", json!({})).await;
    assert_eq!(missing["error"]["code"], "key_not_found", "{missing}");

    // Its owner and an admin may use it.
    let (status, body) = call(
        &alice,
        Method::POST,
        &format!("/v1/tasks/{task}/complete"),
        json!({"fencing_token": task_token, "result": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &alice,
        Method::POST,
        "/v1/locks/L/release",
        json!({"session_id": session, "fencing_token": fencing_token}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        admin,
        Method::POST,
        &format!("/v1/sessions/{session}/keepalive"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        admin,
        Method::DELETE,
        &format!("/v1/sessions/{session}"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Issue #11: an orphaned node of an earlier run, sharing the secret and reusing
/// the ports, could answer a new cluster's RPCs. Every RPC carries the cluster id
/// and a node refuses another cluster's (or none); a node refuses to start on a
/// data directory of another cluster, naming both ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_on_rpcs_and_at_start() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(1, Options::default()).await;
    let info = common::send(
        reqwest::Client::new()
            .get(format!("{}/v1/cluster", cluster.url(1)))
            .bearer_auth(common::admin_token()),
    )
    .await
    .1;
    let ours = info["cluster_id"]
        .as_str()
        .expect("a cluster id")
        .to_owned();
    assert!(ours.starts_with("test-"), "{info}");
    let http = reqwest::Client::new();
    let raft_url = cluster.node(1).raft_url();
    let vote = |cluster_id: Option<&str>| {
        let request = http
            .post(format!("{raft_url}/raft/vote"))
            .header("x-conclave-secret", common::SECRET)
            .header("x-conclave-target", "1")
            .header(
                "x-conclave-format",
                conclave::codec::FORMAT_VERSION.to_string(),
            )
            .body(vec![0xff]);
        match cluster_id {
            Some(id) => request.header("x-conclave-cluster", id),
            None => request,
        }
    };
    for other in [Some("another-cluster"), None] {
        let (status, body) = common::send(vote(other)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("cluster_mismatch")),
            "{other:?}: {body}"
        );
    }
    let (status, _) = common::send(vote(Some(&ours))).await;
    assert_eq!(status, 400, "our own id passes; the body does not decode");

    // The same data directory under another cluster's config does not start.
    cluster.kill(1);
    let config_path = cluster.node(1).config_path.clone();
    let config = std::fs::read_to_string(&config_path).unwrap();
    let config = config.replace(
        &format!("cluster_id = \"{ours}\""),
        "cluster_id = \"another-cluster\"",
    );
    std::fs::write(&config_path, config).unwrap();
    cluster.spawn(1);
    let exited = common::wait_until(Duration::from_secs(30), || {
        let status = cluster.try_wait(1);
        async move { status }
    })
    .await
    .expect("the node exits");
    assert!(!exited.success());
    let log = cluster.log(1);
    assert!(
        log.contains(&format!("belongs to cluster \"{ours}\""))
            && log.contains("configured for cluster \"another-cluster\""),
        "{log}"
    );
}
