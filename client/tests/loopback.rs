//! The client against a scripted loopback HTTP server (no Conclave process): what
//! it sends on the wire and how it reads answers. The real server is exercised by
//! the root crate's integration tests, which use this client.

use conclave_client::{Client, Consistency, Error, KvPut};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves one connection: reads one request, answers `status` with `body`, and
/// returns the request's head and body as text.
async fn serve_once(
    status: &'static str,
    body: &'static str,
) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let read = socket.read(&mut buffer).await.unwrap();
            request.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&request).into_owned();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end]
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|n| n.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if request.len() >= head_end + 4 + length || read == 0 {
                    break;
                }
            }
        }
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(answer.as_bytes()).await.unwrap();
        String::from_utf8(request).unwrap()
    });
    (base, handle)
}

#[tokio::test]
async fn a_refusal_is_an_api_error_with_status_code_and_details() {
    let (base, server) = serve_once(
        "409 Conflict",
        r#"{"error":{"code":"cas_mismatch","current_version":3,"message":"version mismatch: current version is 3"}}"#,
    )
    .await;
    let client = Client::new(&base).unwrap();
    let options = KvPut {
        if_version: Some(2),
        ..KvPut::default()
    };
    let error = client
        .kv_put_with("jobs/1", &json!({"n": 1}), &options)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(409));
    assert_eq!(error.code(), Some("cas_mismatch"));
    assert_eq!(error.api().unwrap().detail("current_version"), &json!(3));
    let request = server.await.unwrap();
    assert!(
        request.starts_with("PUT /v1/kv/jobs%2F1 HTTP/1.1\r\n"),
        "{request}"
    );
    let body = &request[request.find("\r\n\r\n").unwrap() + 4..];
    let sent: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(sent, json!({"value": {"n": 1}, "if_version": 2}));
}

#[tokio::test]
async fn a_claim_that_finds_nothing_is_none() {
    let (base, server) = serve_once("204 No Content", "").await;
    let client = Client::new(&base).unwrap();
    assert_eq!(client.task_claim(7, 0).await.unwrap(), None);
    let request = server.await.unwrap();
    assert!(
        request.starts_with("POST /v1/tasks/claim HTTP/1.1\r\n"),
        "{request}"
    );
}

#[tokio::test]
async fn a_stale_read_sends_the_consistency_query() {
    let (base, server) = serve_once("200 OK", r#"{"holders":[],"waiters":[]}"#).await;
    let client = Client::new(&base).unwrap();
    let view = client
        .lock_get("db migration", Consistency::Stale)
        .await
        .unwrap();
    assert_eq!(view["holders"], json!([]));
    let request = server.await.unwrap();
    assert!(
        request.starts_with("GET /v1/locks/db%20migration?consistency=stale HTTP/1.1\r\n"),
        "{request}"
    );
}

#[tokio::test]
async fn a_node_that_is_down_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let error = Client::new(&base).unwrap().health().await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error:?}");
    assert_eq!(error.status(), None);
}
