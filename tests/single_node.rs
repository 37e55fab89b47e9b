//! One real `conclave` process: the default `serve`, restarts, batching under 64
//! concurrent clients, idempotent retries, and bad input.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{refusal, send, wait_until, Cluster, Options, SECRET};
use conclave_client::{Consistency, KvDelete, KvList, KvPut};
use serde_json::{json, Value};

/// `conclave serve` with no arguments: a single-node cluster on the base port with
/// its data in ./conclave-data, initialized once and simply reopened after restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_arguments_runs_and_reopens_its_data() {
    let _serial = common::serial().await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let api = common::api(&url);
    let start = || {
        Command::new(common::binary())
            .arg("serve")
            .current_dir(dir.path())
            .env("CONCLAVE_BASE_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let wait_ready = || async {
        let ready = wait_until(Duration::from_secs(20), || async {
            api.ready().await.ok()?.ready.then_some(())
        })
        .await;
        assert!(ready.is_some(), "node never became ready");
    };

    let mut node = start();
    wait_ready().await;
    api.kv_put("survives", &json!([1, 2, 3])).await.unwrap();
    assert!(dir.path().join("conclave-data").is_dir());

    // SIGKILL, then a plain restart: no re-initialization error, data intact.
    node.kill().unwrap();
    node.wait().unwrap();
    let mut node = start();
    wait_ready().await;
    let body = api.kv_get("survives", Consistency::Linearizable).await;
    assert_eq!(body.unwrap()["value"], json!([1, 2, 3]));
    api.kv_put("after-restart", &json!(true)).await.unwrap();
    node.kill().unwrap();
    node.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_clients_are_acknowledged_once_each_and_batched() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let url = cluster.url(1);
    let before = cluster.status(1).await.unwrap()["last_log_index"]
        .as_u64()
        .unwrap();
    const CLIENTS: usize = 64;
    const WRITES: usize = 50;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let url = url.clone();
            tokio::spawn(async move {
                // Its own pool: 64 clients, 64 connections.
                let api = common::api(&url);
                let mut indexes = Vec::new();
                for write in 0..WRITES {
                    let options = KvPut {
                        request_id: Some(format!("c{client}-w{write}")),
                        ..KvPut::default()
                    };
                    let key = format!("c/{client}/{write}");
                    let written = api.kv_put_with(&key, &json!(write), &options).await;
                    indexes.push(written.expect("acknowledged").index);
                }
                indexes
            })
        })
        .collect();
    let mut indexes = BTreeSet::new();
    for task in tasks {
        for index in task.await.unwrap() {
            assert!(
                indexes.insert(index),
                "two requests were given command index {index}"
            );
        }
    }
    let requests = (CLIENTS * WRITES) as u64;
    assert_eq!(indexes.len() as u64, requests);
    let status = cluster.status(1).await.unwrap();
    // The initial membership entry took command index 1.
    assert_eq!(
        status["last_command_index"].as_u64().unwrap(),
        requests + 1,
        "each write applied exactly once"
    );
    let entries = status["last_log_index"].as_u64().unwrap() - before;
    eprintln!("{requests} writes in {entries} log entries");
    assert!(
        entries < requests,
        "no batching: {entries} log entries for {requests} writes"
    );
    let api = cluster.api(1);
    for client in [0, 31, 63] {
        let key = format!("c/{client}/{}", WRITES - 1);
        let body = api.kv_get(&key, Consistency::Linearizable).await.unwrap();
        assert_eq!(body["value"], json!(WRITES - 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_id_returns_the_first_result_and_can_be_looked_up() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let api = cluster.api(1);
    let with_id = |request_id: &str| KvPut {
        request_id: Some(request_id.into()),
        ..KvPut::default()
    };
    let first = api.kv_put_with("once", &json!(1), &with_id("req-1")).await;
    let first = first.expect("the first write");
    api.kv_put("once", &json!(2)).await.expect("another write");
    // An identical retry after another write: it returns the first result and must
    // not apply again (the key keeps the later value 2).
    let retry = api.kv_put_with("once", &json!(1), &with_id("req-1")).await;
    assert_eq!(retry.expect("the retry"), first);
    let body = api.kv_get("once", Consistency::Linearizable).await.unwrap();
    assert_eq!(body["value"], 2);

    let body = (api.request_get("req-1", Consistency::Linearizable).await).unwrap();
    assert_eq!(body["applied"], true);
    assert_eq!(body["index"], first.index);
    assert_eq!(body["result"]["status"], 200);
    assert_eq!(
        body["result"]["body"],
        json!({ "version": first.version, "index": first.index }),
        "the lookup repeats the first answer"
    );
    let body = (api
        .request_get("never-sent", Consistency::Linearizable)
        .await)
        .unwrap();
    assert_eq!(body["applied"], json!(false));

    // A failed compare-and-set is a result too, and a retry gets the same 409.
    let cas = KvPut {
        if_version: Some(1),
        ..with_id("req-cas")
    };
    let refused = api.kv_put_with("once", &json!(9), &cas).await.unwrap_err();
    assert_eq!(
        (refused.status(), refused.code()),
        (Some(409), Some("cas_mismatch"))
    );
    let again = api.kv_put_with("once", &json!(9), &cas).await.unwrap_err();
    assert_eq!(
        again.api(),
        refused.api(),
        "the same refusal, details and all"
    );

    // Reusing an id for a different request is refused, not silently answered.
    assert_eq!(
        refusal(
            api.kv_put_with("elsewhere", &json!(1), &with_id("req-1"))
                .await
        ),
        (409, "request_id_conflict".to_owned())
    );
    assert_eq!(
        refusal(api.kv_get("elsewhere", Consistency::Linearizable).await).0,
        404
    );
}

async fn expect_error(request: reqwest::RequestBuilder, status: u16, code: &str) {
    let (got, body) = send(request).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_documented_4xx_and_never_hurts_the_node() {
    let _serial = common::serial().await;
    // A small /raft/* body limit: 1 entry of at most 64 KiB (+64 KiB framing), 1 MiB
    // snapshot chunks, +1 MiB slack = 2 MiB.
    let options = Options {
        extra_toml: "[raft]\nmax_payload_entries = 1\nsnapshot_max_chunk_bytes = 1048576\n\
                     [limits]\nmax_batch_bytes = 65536\n"
            .into(),
        ..Options::default()
    };
    let cluster = Cluster::start(1, options).await;
    let url = cluster.url(1);
    let http = &cluster.http;
    let kv = format!("{url}/v1/kv/key");

    expect_error(http.put(&kv).body("{\"value\": "), 400, "malformed_json").await;
    expect_error(http.put(&kv).body("not json at all"), 400, "malformed_json").await;
    expect_error(
        http.put(&kv)
            .json(&json!({ "value": 1, "if_version": "seven" })),
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        http.put(&kv).json(&json!({ "if_version": 1 })),
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        http.put(&kv).json(&json!({ "value": 1, "surprise": true })),
        400,
        "invalid_request",
    )
    .await;
    expect_error(http.put(&kv).json(&json!([1, 2])), 400, "invalid_request").await;
    let long_key = "k".repeat(513);
    expect_error(
        http.put(format!("{url}/v1/kv/{long_key}"))
            .json(&json!({ "value": 1 })),
        400,
        "key_too_long",
    )
    .await;
    expect_error(
        http.get(format!("{url}/v1/kv/{long_key}")),
        400,
        "key_too_long",
    )
    .await;
    let huge = json!({ "value": "x".repeat(1024 * 1024 + 16 * 1024) });
    common::expect_too_large(http.put(&kv).json(&huge)).await;
    let big_value = json!({ "value": "x".repeat(600 * 1024) });
    expect_error(http.put(&kv).json(&big_value), 413, "payload_too_large").await;
    let long_id = json!({ "value": 1, "request_id": "r".repeat(129) });
    expect_error(http.put(&kv).json(&long_id), 400, "invalid_request_id").await;
    expect_error(
        http.get(format!("{url}/v1/kv?limit=0")),
        400,
        "invalid_limit",
    )
    .await;
    expect_error(
        http.get(format!("{url}/v1/kv?limit=many")),
        400,
        "invalid_query",
    )
    .await;
    expect_error(
        http.get(format!("{url}/v1/kv/key?consistency=eventually")),
        400,
        "invalid_query",
    )
    .await;
    expect_error(
        http.get(format!("{url}/v1/kv/missing")),
        404,
        "key_not_found",
    )
    .await;
    expect_error(http.get(format!("{url}/v1/nothing/here")), 404, "not_found").await;
    expect_error(http.get(format!("{url}/nowhere")), 404, "not_found").await;
    expect_error(http.patch(&kv), 405, "method_not_allowed").await;
    expect_error(http.delete(&kv).body("{oops"), 400, "malformed_json").await;
    expect_error(
        http.delete(format!("{url}/v1/cluster/members/abc")),
        400,
        "invalid_node_id",
    )
    .await;
    expect_error(http.get(format!("{url}/v1/kv/%FF")), 400, "invalid_path").await;
    expect_error(
        http.get(format!("{url}/v1/requests/%FF%FE")),
        400,
        "invalid_path",
    )
    .await;

    // /raft/* is served only on the peer listener, and requires the cluster secret
    // (never a client token), the right target and format, and a body that decodes.
    let raft_url = cluster.node(1).raft_url();
    let raft_with_format = |secret: &str, target: &str, format: &str| {
        http.post(format!("{raft_url}/raft/vote"))
            .header("x-conclave-secret", secret)
            .header("x-conclave-target", target)
            .header("x-conclave-format", format)
            .header("x-conclave-cluster", &cluster.cluster_id)
            .body(vec![0xff, 0xff, 0xff])
    };
    let format = conclave::codec::FORMAT_VERSION.to_string();
    let raft = |secret: &str, target: &str| raft_with_format(secret, target, &format);
    expect_error(
        http.post(format!("{raft_url}/raft/append")).body("x"),
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        raft("wrong-secret-of-the-same-length", "1"),
        401,
        "unauthorized",
    )
    .await;
    expect_error(raft(SECRET, "2"), 421, "wrong_node").await;
    // A follower's read-index request (#16) needs the secret like every /raft/* route;
    // with it, this node (the leader) answers its read index: what it has applied.
    let read_index = |secret: &str| {
        http.post(format!("{raft_url}/raft/read_index"))
            .header("x-conclave-secret", secret)
            .header("x-conclave-target", "1")
            .header("x-conclave-format", &format)
            .header("x-conclave-cluster", &cluster.cluster_id)
    };
    expect_error(
        http.post(format!("{raft_url}/raft/read_index")),
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        read_index("wrong-secret-of-the-same-length"),
        401,
        "unauthorized",
    )
    .await;
    let reply = read_index(SECRET).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let answer: Result<u64, conclave::replica::read_index::ReadError> =
        conclave::codec::decode(&reply.bytes().await.unwrap()).unwrap();
    let applied = cluster.status(1).await.unwrap()["last_applied_index"]
        .as_u64()
        .unwrap();
    assert!(
        matches!(answer, Ok(index) if index >= 1 && index <= applied),
        "{answer:?}, applied {applied}"
    );
    expect_error(raft(SECRET, "1"), 400, "invalid_body").await;
    expect_error(raft_with_format(SECRET, "1", "999"), 400, "format_mismatch").await;
    let oversized_raft = raft(SECRET, "1").body(vec![0u8; 2 * 1024 * 1024 + 16 * 1024]);
    common::expect_too_large(oversized_raft).await;

    // Still healthy and serving.
    cluster.api(1).kv_put("key", &json!("fine")).await.unwrap();
    let (status, body) = send(http.get(format!("{url}/health"))).await;
    assert_eq!((status, body["status"].clone()), (200, json!("ok")));
    assert!(!cluster.log(1).contains("panicked"), "{}", cluster.log(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_a_prefix_and_delete_honours_if_version() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let url = cluster.url(1);
    let api = cluster.api(1);
    for key in ["app/a", "app/b", "app/c", "other/x"] {
        api.kv_put(key, &json!(key)).await.unwrap();
    }
    let mut list = KvList {
        prefix: Some("app/".into()),
        limit: Some(2),
        ..KvList::default()
    };
    let page = api.kv_list(&list).await.unwrap();
    let keys = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(keys(&page), vec!["app/a", "app/b"]);
    assert_eq!(page["next_after"], "app/b");
    list.after = Some("app/b".into());
    let rest = api.kv_list(&list).await.unwrap();
    assert_eq!(keys(&rest), vec!["app/c"]);
    assert_eq!(rest["next_after"], Value::Null);

    // Regression: list views re-encode values; numbers must keep every digit (raw
    // HTTP: the number must reach the server and come back as text unparsed).
    let big = "{\"value\": {\"n\": 123456789012345678901234567890}}";
    assert_eq!(
        send(cluster.http.put(format!("{url}/v1/kv/big/one")).body(big))
            .await
            .0,
        200
    );
    let listed = common::text(cluster.http.get(format!("{url}/v1/kv?prefix=big/"))).await;
    assert!(
        listed.contains("123456789012345678901234567890"),
        "{listed}"
    );
    let current = api
        .kv_get("app/a", Consistency::Linearizable)
        .await
        .unwrap();
    let version = current["version"].as_u64().unwrap();
    let at = |if_version: u64| KvDelete {
        if_version: Some(if_version),
        ..KvDelete::default()
    };
    let stale = api
        .kv_delete("app/a", &at(version + 100))
        .await
        .unwrap_err();
    let refused = stale.api().expect("an API refusal");
    assert_eq!(
        (refused.status, refused.detail("current_version")),
        (409, &json!(version))
    );
    let deleted = api.kv_delete("app/a", &at(version)).await.unwrap();
    assert!(deleted.deleted);
    let deleted = api.kv_delete("app/a", &KvDelete::default()).await.unwrap();
    assert!(!deleted.deleted);
    assert_eq!(
        refusal(api.kv_get("app/a", Consistency::Linearizable).await).0,
        404
    );
}
