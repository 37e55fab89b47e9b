//! Connection hygiene (issue #11): slow and idle connections are closed on their
//! timeouts while `/health` keeps answering, a connection past the limit is closed at
//! once, and a declared body over the limit is refused before it is read, also with
//! `Expect: 100-continue`. Raw sockets against a real node.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Cluster, Options};

fn connect(cluster: &Cluster) -> TcpStream {
    TcpStream::connect(("127.0.0.1", cluster.node(1).port)).expect("connect")
}

/// Reads until the server closes the connection (or `within` passes: `None`).
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        // A reset is a close too.
        Err(_) => Some(String::from_utf8_lossy(&received).into_owned()),
    }
}

async fn health(cluster: &Cluster) -> u16 {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    match http.get(format!("{}/health", cluster.url(1))).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_on_their_timeouts_while_health_answers() {
    let _serial = common::serial().await;
    let options = Options {
        extra_toml: "[limits]\nheader_read_timeout_ms = 1000\nbody_read_timeout_ms = 1000\n".into(),
        ..Options::default()
    };
    let cluster = Cluster::start(1, options).await;
    let mut idle: Vec<TcpStream> = (0..200).map(|_| connect(&cluster)).collect();
    let mut slow_headers: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut stream = connect(&cluster);
            stream
                .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
                .unwrap();
            stream
        })
        .collect();
    let mut slow_bodies: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = connect(&cluster);
            let head = format!(
                "PUT /v1/kv/slow HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"value\"",
                common::admin_token()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream
        })
        .collect();
    assert_eq!(
        health(&cluster).await,
        200,
        "answers while 320 connections stall"
    );

    let bound = Duration::from_secs(30);
    for stream in idle.iter_mut().chain(slow_headers.iter_mut()) {
        assert!(
            read_until_closed(stream, bound).is_some(),
            "an idle or slow-header connection was not closed"
        );
    }
    for stream in &mut slow_bodies {
        let answer = read_until_closed(stream, bound).expect("a slow body is cut off");
        assert!(
            answer.starts_with("HTTP/1.1 408") && answer.contains("body_timeout"),
            "{answer}"
        );
    }
    assert_eq!(health(&cluster).await, 200);
    let (status, _) = common::get(&cluster.http, &cluster.url(1), "slow").await;
    assert_eq!(status, 404, "the slow write was not applied");
    assert!(!cluster.log(1).contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_limit_is_closed_at_once_and_health_answers_after() {
    let _serial = common::serial().await;
    let options = Options {
        extra_toml: "[limits]\nmax_connections = 8\n".into(),
        ..Options::default()
    };
    let cluster = Cluster::start(1, options).await;
    let mut streams: Vec<TcpStream> = (0..16).map(|_| connect(&cluster)).collect();
    // Within the limit a silent connection is kept (the header timeout is 30 s);
    // past it the server closes it without reading a byte.
    let closed = streams
        .iter_mut()
        .filter_map(|stream| read_until_closed(stream, Duration::from_secs(3)))
        .count();
    assert!(closed >= 8, "only {closed} of 16 closed with a limit of 8");
    assert!(closed < 16, "every connection was closed: none were served");
    drop(streams);
    let answered = common::wait_until(Duration::from_secs(30), || async {
        (health(&cluster).await == 200).then_some(())
    })
    .await;
    assert!(
        answered.is_some(),
        "/health answers once the slots are free"
    );
}

/// Before: the server answered `100 Continue` to a body it would refuse, and
/// waited for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    for expect in ["", "expect: 100-continue\r\n"] {
        let mut stream = connect(&cluster);
        let head = format!(
            "PUT /v1/kv/big HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\ncontent-length: 100000000\r\n{expect}\r\n",
            common::admin_token()
        );
        stream.write_all(head.as_bytes()).unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(30)).expect("answered");
        assert!(
            answer.starts_with("HTTP/1.1 413") && answer.contains("payload_too_large"),
            "{expect:?}: {answer}"
        );
        assert!(!answer.contains("100 Continue"), "{answer}");
    }
    assert_eq!(health(&cluster).await, 200);
}
