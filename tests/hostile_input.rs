//! Regressions from a hostile-input probe of a single node (issue #10): each test
//! is named after the bug it pins, and each ends by checking that the node still
//! serves and logged no panic.

mod common;

use std::io::{Read, Write};

use common::{send, Cluster, Options, SECRET};
use openraft::raft::InstallSnapshotRequest;
use serde_json::{json, Value};

use conclave::raft_types::{SnapshotMeta, StoredMembership, TypeConfig, Vote};

/// JSON text that serde_json accepts as raw text but cannot re-encode in a response.
fn poisoned_values() -> [String; 2] {
    let deep = format!("{}{}", "[".repeat(128), "]".repeat(128));
    [deep, r#""\ud800""#.to_owned()]
}

async fn expect_code(request: reqwest::RequestBuilder, status: u16, code: &str) {
    let (got, body) = send(request).await;
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
}

fn body_with(field: &str, value: &str, rest: &str) -> String {
    format!(r#"{{"{field}": {value}{rest}}}"#)
}

async fn assert_still_serving(cluster: &Cluster) {
    let url = cluster.url(1);
    let (status, body) = send(cluster.http.get(format!("{url}/health"))).await;
    assert_eq!(
        (status, body["status"].clone()),
        (200, json!("ok")),
        "{body}"
    );
    assert!(!cluster.log(1).contains("panicked"), "{}", cluster.log(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_value_can_poison_every_read_that_lists_it() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let url = cluster.url(1);
    let http = &cluster.http;
    let (status, body) = send(
        http.post(format!("{url}/v1/sessions"))
            .json(&json!({ "name": "w", "capabilities": ["x"], "capacity": 1, "ttl_ms": 60_000 })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_u64().unwrap();
    let (status, body) = send(
        http.post(format!("{url}/v1/tasks"))
            .json(&json!({ "kind": "k", "required_capabilities": ["x"] })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let task = body["task_id"].as_u64().unwrap();
    let (status, claimed) = send(
        http.post(format!("{url}/v1/tasks/claim"))
            .json(&json!({ "session_id": session })),
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    let token = claimed["fencing_token"].as_u64().unwrap();
    let json_post = |path: String, body: String| {
        http.post(format!("{url}{path}"))
            .header("content-type", "application/json")
            .body(body)
    };
    for value in poisoned_values() {
        let kv = http
            .put(format!("{url}/v1/kv/poison"))
            .header("content-type", "application/json")
            .body(body_with("value", &value, ""));
        expect_code(kv, 400, "invalid_request").await;
        let metadata = body_with("metadata", &value, r#", "name": "m", "ttl_ms": 60000"#);
        expect_code(
            json_post("/v1/sessions".into(), metadata),
            400,
            "invalid_request",
        )
        .await;
        let payload = body_with("payload", &value, r#", "kind": "k""#);
        expect_code(
            json_post("/v1/tasks".into(), payload),
            400,
            "invalid_request",
        )
        .await;
        let progress = body_with(
            "progress",
            &value,
            &format!(r#", "fencing_token": {token}"#),
        );
        expect_code(
            json_post(format!("/v1/tasks/{task}/heartbeat"), progress),
            400,
            "invalid_request",
        )
        .await;
        let result = body_with("result", &value, &format!(r#", "fencing_token": {token}"#));
        expect_code(
            json_post(format!("/v1/tasks/{task}/complete"), result),
            400,
            "invalid_request",
        )
        .await;
        let campaign = body_with("value", &value, &format!(r#", "session_id": {session}"#));
        expect_code(
            json_post("/v1/elections/e/campaign".into(), campaign),
            400,
            "invalid_request",
        )
        .await;
    }
    // A value just inside the depth limit is stored and listed.
    let deep_ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
    let (status, body) = send(
        http.put(format!("{url}/v1/kv/deep"))
            .header("content-type", "application/json")
            .body(body_with("value", &deep_ok, "")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for list in ["/v1/kv", "/v1/sessions", "/v1/tasks"] {
        let (status, body) = send(http.get(format!("{url}{list}"))).await;
        assert_eq!(status, 200, "{list}: {body}");
        assert!(
            body["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty()),
            "{body}"
        );
    }
    let (status, body) = send(http.get(format!("{url}/v1/tasks/{task}"))).await;
    assert_eq!(
        (status, body["state"].clone()),
        (200, json!("assigned")),
        "{body}"
    );
    assert_still_serving(&cluster).await;
}

/// Sends raw bytes to the node and returns the status line's code.
fn raw_status(port: u16, request: &[u8]) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    // Read until the status line is in (the server may keep the connection open).
    while !response.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
        }
    }
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_answered_400_not_413() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let port = cluster.node(1).port;
    // "zz" is not a hexadecimal chunk size. PUT /v1/kv goes through the forwarding
    // layer, POST /v1/sessions is read by the JSON extractor: both answer 400.
    for path in ["PUT /v1/kv/chunked", "POST /v1/sessions"] {
        let request = format!(
            "{path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             authorization: Bearer {}\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n",
            common::admin_token()
        );
        let status = tokio::task::spawn_blocking(move || raw_status(port, request.as_bytes()))
            .await
            .unwrap();
        assert_eq!(status, 400, "{path}");
    }
    // A body over the limit is still 413.
    let huge = json!({ "value": "x".repeat(1024 * 1024 + 16 * 1024) });
    common::expect_too_large(
        cluster
            .http
            .put(format!("{}/v1/kv/huge", cluster.url(1)))
            .json(&huge),
    )
    .await;
    assert_still_serving(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_ids_accept_plus_one_and_leading_zeros_as_one() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let url = cluster.url(1);
    let http = &cluster.http;
    for id in ["+1", "00001", "01", "1.0"] {
        expect_code(
            http.delete(format!("{url}/v1/cluster/members/{id}")),
            400,
            "invalid_node_id",
        )
        .await;
        expect_code(
            http.get(format!("{url}/v1/sessions/{id}")),
            400,
            "invalid_session_id",
        )
        .await;
        expect_code(
            http.get(format!("{url}/v1/tasks/{id}")),
            400,
            "invalid_task_id",
        )
        .await;
    }
    // The canonical form still reaches the resource.
    expect_code(
        http.get(format!("{url}/v1/sessions/1")),
        404,
        "session_not_found",
    )
    .await;
    let (status, body) = send(http.get(format!("{url}/v1/cluster"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["members"].as_array().map(Vec::len), Some(1), "{body}");
    assert_still_serving(&cluster).await;
}

fn snapshot_chunk(offset: u64, data: Vec<u8>) -> Vec<u8> {
    let request: InstallSnapshotRequest<TypeConfig> = InstallSnapshotRequest {
        vote: Vote::new_committed(1_000, 2),
        meta: SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: "hostile-snapshot".into(),
        },
        offset,
        data,
        done: false,
    };
    conclave::codec::encode(&request).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_raft_snapshot_chunks_kill_a_node() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let url = cluster.node(1).raft_url();
    let chunk = |offset: u64| {
        cluster
            .http
            .post(format!("{url}/raft/snapshot"))
            .header("x-conclave-secret", SECRET)
            .header("x-conclave-target", "1")
            .header("x-conclave-cluster", &cluster.cluster_id)
            .header(
                "x-conclave-format",
                conclave::codec::FORMAT_VERSION.to_string(),
            )
            .body(snapshot_chunk(offset, vec![7u8; 64]))
    };
    let (status, body) = send(chunk(0)).await;
    assert_eq!(status, 200, "{body}");
    // Before the fix: the first allocated 1 TiB and aborted, the second panicked.
    for offset in [1u64 << 40, (1u64 << 63) - 1, 65] {
        expect_code(chunk(offset), 400, "invalid_snapshot_chunk").await;
    }
    // A resend and the next contiguous chunk are taken.
    for offset in [0, 64] {
        let (status, body) = send(chunk(offset)).await;
        assert_eq!(status, 200, "offset {offset}: {body}");
    }
    let health = format!("{}/health", cluster.url(1));
    let (status, body): (u16, Value) = send(cluster.http.get(health)).await;
    assert_eq!(status, 200, "{body}");
    assert!(!cluster.log(1).contains("panicked"), "{}", cluster.log(1));
    assert!(cluster.node(1).child.is_some());
}
