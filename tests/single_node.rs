//! One real `conclave` process: the default `serve`, restarts, batching under 64
//! concurrent clients, idempotent retries, and bad input.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{get, put, send, wait_until, Cluster, Options, SECRET};
use serde_json::{json, Value};

/// `conclave serve` with no arguments: a single-node cluster on the base port with
/// its data in ./conclave-data, initialized once and simply reopened after restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_arguments_runs_and_reopens_its_data() {
    let _serial = common::serial().await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let http = common::client();
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
            let response = http.get(format!("{url}/ready")).send().await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
        assert!(ready.is_some(), "node never became ready");
    };

    let mut node = start();
    wait_ready().await;
    let (status, body) = put(&http, &url, "survives", json!({ "value": [1, 2, 3] })).await;
    assert_eq!(status, 200, "{body}");
    assert!(dir.path().join("conclave-data").is_dir());

    // SIGKILL, then a plain restart: no re-initialization error, data intact.
    node.kill().unwrap();
    node.wait().unwrap();
    let mut node = start();
    wait_ready().await;
    let (status, body) = get(&http, &url, "survives").await;
    assert_eq!(
        (status, body["value"].clone()),
        (200, json!([1, 2, 3])),
        "{body}"
    );
    let (status, _) = put(&http, &url, "after-restart", json!({ "value": true })).await;
    assert_eq!(status, 200);
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
                let http = common::client();
                let mut indexes = Vec::new();
                for write in 0..WRITES {
                    let body =
                        json!({ "value": write, "request_id": format!("c{client}-w{write}") });
                    let (status, body) =
                        put(&http, &url, &format!("c/{client}/{write}"), body).await;
                    assert_eq!(status, 200, "{body}");
                    indexes.push(body["index"].as_u64().unwrap());
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
    for client in [0, 31, 63] {
        let (status, body) = get(&cluster.http, &url, &format!("c/{client}/{}", WRITES - 1)).await;
        assert_eq!((status, body["value"].clone()), (200, json!(WRITES - 1)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_id_returns_the_first_result_and_can_be_looked_up() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let url = cluster.url(1);
    let first = put(
        &cluster.http,
        &url,
        "once",
        json!({ "value": 1, "request_id": "req-1" }),
    )
    .await;
    assert_eq!(first.0, 200);
    let other = put(&cluster.http, &url, "once", json!({ "value": 2 })).await;
    assert_eq!(other.0, 200);
    // An identical retry after another write: it returns the first result and must
    // not apply again (the key keeps the later value 2).
    let retry = put(
        &cluster.http,
        &url,
        "once",
        json!({ "value": 1, "request_id": "req-1" }),
    )
    .await;
    assert_eq!(retry, first);
    let (_, body) = get(&cluster.http, &url, "once").await;
    assert_eq!(body["value"], 2);

    let (status, body) = send(cluster.http.get(format!("{url}/v1/requests/req-1"))).await;
    assert_eq!(status, 200);
    assert_eq!(body["applied"], true);
    assert_eq!(body["index"], first.1["index"]);
    assert_eq!(body["result"]["status"], 200);
    assert_eq!(
        body["result"]["body"], first.1,
        "the lookup repeats the first answer"
    );
    let (status, body) = send(cluster.http.get(format!("{url}/v1/requests/never-sent"))).await;
    assert_eq!((status, body["applied"].clone()), (200, json!(false)));

    // A failed compare-and-set is a result too, and a retry gets the same 409.
    let cas = json!({ "value": 9, "if_version": 1, "request_id": "req-cas" });
    let refused = put(&cluster.http, &url, "once", cas.clone()).await;
    assert_eq!(refused.0, 409);
    assert_eq!(refused.1["error"]["code"], "cas_mismatch");
    assert_eq!(put(&cluster.http, &url, "once", cas).await, refused);

    // Reusing an id for a different request is refused, not silently answered.
    let reused = put(
        &cluster.http,
        &url,
        "elsewhere",
        json!({ "value": 1, "request_id": "req-1" }),
    )
    .await;
    assert_eq!(
        (reused.0, reused.1["error"]["code"].clone()),
        (409, json!("request_id_conflict"))
    );
    assert_eq!(get(&cluster.http, &url, "elsewhere").await.0, 404);
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
    expect_error(raft(SECRET, "1"), 400, "invalid_body").await;
    expect_error(raft_with_format(SECRET, "1", "999"), 400, "format_mismatch").await;
    let oversized_raft = raft(SECRET, "1").body(vec![0u8; 2 * 1024 * 1024 + 16 * 1024]);
    common::expect_too_large(oversized_raft).await;

    // Still healthy and serving.
    let (status, _) = put(http, &url, "key", json!({ "value": "fine" })).await;
    assert_eq!(status, 200);
    let (status, body) = send(http.get(format!("{url}/health"))).await;
    assert_eq!((status, body["status"].clone()), (200, json!("ok")));
    assert!(!cluster.log(1).contains("panicked"), "{}", cluster.log(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_a_prefix_and_delete_honours_if_version() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let url = cluster.url(1);
    for key in ["app/a", "app/b", "app/c", "other/x"] {
        assert_eq!(
            put(&cluster.http, &url, key, json!({ "value": key }))
                .await
                .0,
            200
        );
    }
    let (status, page) = send(cluster.http.get(format!("{url}/v1/kv?prefix=app/&limit=2"))).await;
    assert_eq!(status, 200);
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
    let (_, rest) = send(
        cluster
            .http
            .get(format!("{url}/v1/kv?prefix=app/&limit=2&after=app/b")),
    )
    .await;
    assert_eq!(keys(&rest), vec!["app/c"]);
    assert_eq!(rest["next_after"], Value::Null);

    // Regression: list views re-encode values; numbers must keep every digit.
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
    let (_, current) = get(&cluster.http, &url, "app/a").await;
    let version = current["version"].as_u64().unwrap();
    let stale = json!({ "if_version": version + 100 });
    let (status, body) = send(
        cluster
            .http
            .delete(format!("{url}/v1/kv/app/a"))
            .json(&stale),
    )
    .await;
    assert_eq!(
        (status, body["error"]["current_version"].clone()),
        (409, json!(version))
    );
    let (status, body) = send(
        cluster
            .http
            .delete(format!("{url}/v1/kv/app/a"))
            .json(&json!({ "if_version": version })),
    )
    .await;
    assert_eq!((status, body["deleted"].clone()), (200, json!(true)));
    let (status, body) = send(cluster.http.delete(format!("{url}/v1/kv/app/a"))).await;
    assert_eq!((status, body["deleted"].clone()), (200, json!(false)));
    assert_eq!(get(&cluster.http, &url, "app/a").await.0, 404);
}
