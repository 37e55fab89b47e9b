//! The retry rules against scripted loopback servers (no Conclave process): which
//! answers a builder-made client retries, that a write's retries carry one
//! `request_id`, that a dead endpoint is skipped and the token sent. The same rules
//! against real nodes are in the root crate's `tests/client_retry.rs`.

use std::time::Duration;

mod scripted;

use conclave_client::{Client, KvPut};
use scripted::{body_of, scripted};
use serde_json::{json, Value};

fn client(endpoints: &[&str]) -> Client {
    Client::builder()
        .endpoints(endpoints.iter().copied())
        .token("secret-token")
        .timeout(Duration::from_secs(10))
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .unwrap()
}

const WRITTEN: &str = r#"{"version":7,"index":7}"#;
const NO_LEADER: &str = r#"{"error":{"code":"no_leader","message":"no leader"}}"#;
const INDETERMINATE: &str = r#"{"error":{"code":"indeterminate","message":"unknown"}}"#;

#[tokio::test]
async fn a_503_and_a_504_are_retried_with_one_generated_request_id() {
    let (base, server) = scripted(vec![
        ("503 Service Unavailable", NO_LEADER),
        ("504 Gateway Timeout", INDETERMINATE),
        ("200 OK", WRITTEN),
    ])
    .await;
    let client = client(&[&base]);
    let written = client.kv_put("k", &json!(1)).await.unwrap();
    assert_eq!(written.version, 7);
    let requests = server.await.unwrap();
    let ids: Vec<Value> = requests
        .iter()
        .map(|request| body_of(request)["request_id"].clone())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[0].is_string(), "{ids:?}");
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert!(requests[0]
        .to_ascii_lowercase()
        .contains("authorization: bearer secret-token"));
    assert_eq!(client.retries(), 2);
}

#[tokio::test]
async fn a_callers_request_id_is_the_one_retried() {
    let (base, server) = scripted(vec![
        ("504 Gateway Timeout", INDETERMINATE),
        ("200 OK", WRITTEN),
    ])
    .await;
    let options = KvPut {
        request_id: Some("mine-1".into()),
        ..KvPut::default()
    };
    client(&[&base])
        .kv_put_with("k", &json!(1), &options)
        .await
        .unwrap();
    let requests = server.await.unwrap();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(body_of(request)["request_id"], "mine-1");
    }
}

#[tokio::test]
async fn a_504_of_a_write_without_a_request_id_is_the_answer() {
    // A claim takes no request_id: repeating it could lose a task.
    let (base, server) = scripted(vec![("504 Gateway Timeout", INDETERMINATE)]).await;
    let error = client(&[&base]).task_claim(1, 0).await.unwrap_err();
    assert_eq!(
        (error.status(), error.code()),
        (Some(504), Some("indeterminate"))
    );
    assert_eq!(server.await.unwrap().len(), 1);
    // So is a put when generated ids are turned off.
    let (base, server) = scripted(vec![("504 Gateway Timeout", INDETERMINATE)]).await;
    let plain = Client::builder()
        .endpoint(base)
        .request_ids(false)
        .build()
        .unwrap();
    assert_eq!(
        plain.kv_put("k", &json!(1)).await.unwrap_err().status(),
        Some(504)
    );
    let requests = server.await.unwrap();
    assert_eq!(
        (requests.len(), body_of(&requests[0]).get("request_id")),
        (1, None)
    );
}

#[tokio::test]
async fn a_dead_first_endpoint_is_skipped() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }; // closed: connections are refused
    let (base, server) = scripted(vec![("200 OK", WRITTEN)]).await;
    let client = client(&[&dead, &base]);
    assert_eq!(client.kv_put("k", &json!(1)).await.unwrap().version, 7);
    assert_eq!(server.await.unwrap().len(), 1);
    assert_eq!(client.current_endpoint().as_str(), format!("{base}/"));
}

#[tokio::test]
async fn a_refusal_is_not_retried_and_a_single_node_client_never_retries() {
    let conflict = r#"{"error":{"code":"cas_mismatch","current_version":3,"message":"m"}}"#;
    let (base, server) = scripted(vec![("409 Conflict", conflict)]).await;
    assert_eq!(
        client(&[&base])
            .kv_put("k", &json!(1))
            .await
            .unwrap_err()
            .code(),
        Some("cas_mismatch")
    );
    assert_eq!(server.await.unwrap().len(), 1);
    let (base, server) = scripted(vec![("503 Service Unavailable", NO_LEADER)]).await;
    let legacy = Client::new(&base).unwrap();
    assert_eq!(
        legacy.kv_put("k", &json!(1)).await.unwrap_err().code(),
        Some("no_leader")
    );
    let requests = server.await.unwrap();
    assert_eq!(body_of(&requests[0]).get("request_id"), None);
}

#[tokio::test]
async fn the_overall_timeout_bounds_the_retries() {
    // Five 503s, but the call may only take a moment: it gives up with the last.
    let answers = vec![("503 Service Unavailable", NO_LEADER); 5];
    let (base, _server) = scripted(answers).await;
    let client = Client::builder()
        .endpoint(base)
        .timeout(Duration::from_millis(300))
        .backoff(Duration::from_millis(200), Duration::from_millis(200))
        .build()
        .unwrap();
    let error = client.kv_put("k", &json!(1)).await.unwrap_err();
    assert_eq!(error.code(), Some("no_leader"));
    assert!(client.retries() < 4, "{}", client.retries());
}
