//! The watch stream against scripted loopback servers: it resumes after its last
//! id when a connection ends, drops a repeated event, yields `event: lagged` as
//! `Error::Lagged` and goes on, and ends on `410 compacted`.

mod scripted;

use std::time::Duration;

use conclave_client::{Client, Error, WatchOptions, WatchStart};
use futures_util::StreamExt;
use scripted::scripted;

const FIRST: &str = "retry: 1000\n: watching from 5.0\n\nid: 5.0\nevent: kv.put\ndata: {\"id\":\"5.0\",\"index\":5,\"seq\":0,\"type\":\"kv.put\",\"key\":\"a\"}\n\nevent: cluster\ndata: {\"type\":\"cluster\",\"local\":true}\n\nid: 5.1\nevent: kv.put\ndata: {\"id\":\"5.1\",\"index\":5,\"seq\":1,\"type\":\"kv.put\",\"key\":\"b\"}\n\n";
// A resumed stream that (wrongly) repeats 5.1, then falls behind.
const SECOND: &str = "retry: 1000\n\nid: 5.1\nevent: kv.put\ndata: {\"id\":\"5.1\",\"index\":5,\"seq\":1,\"type\":\"kv.put\",\"key\":\"b\"}\n\nid: 7.0\nevent: kv.put\ndata: {\"id\":\"7.0\",\"index\":7,\"seq\":0,\"type\":\"kv.put\",\"key\":\"c\"}\n\nevent: lagged\ndata: {\"type\":\"lagged\",\"from_index\":8,\"last_event_id\":\"7.0\"}\n\n";
const COMPACTED: &str =
    r#"{"error":{"code":"compacted","message":"history starts at 100","oldest_index":100}}"#;

#[tokio::test]
async fn the_stream_resumes_after_its_last_id_and_surfaces_lagged_and_compacted() {
    let (base, server) = scripted(vec![
        ("200 OK", FIRST),
        ("200 OK", SECOND),
        ("410 Gone", COMPACTED),
    ])
    .await;
    let client = Client::builder()
        .endpoint(base)
        .token("t")
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .unwrap();
    let options = WatchOptions {
        types: Some("kv".into()),
        start: WatchStart::FromIndex(5),
        ..WatchOptions::default()
    };
    let mut stream = client.watch(options);
    let mut keys = Vec::new();
    for _ in 0..3 {
        let event = stream.next().await.unwrap().unwrap();
        keys.push(event.field("key").as_str().unwrap().to_owned());
    }
    assert_eq!(keys, ["a", "b", "c"]);
    assert!(matches!(
        stream.next().await,
        Some(Err(Error::Lagged { last_event_id: Some(ref id) })) if id == "7.0"
    ));
    // Polling on resumes from 7.0: the node's history moved on.
    match stream.next().await {
        Some(Err(error)) => {
            assert_eq!(
                (error.status(), error.code()),
                (Some(410), Some("compacted"))
            );
            assert_eq!(error.api().unwrap().detail("oldest_index"), 100);
        }
        other => panic!("{other:?}"),
    }
    assert!(stream.next().await.is_none(), "410 ends the stream");
    assert_eq!(stream.last_event_id().as_deref(), Some("7.0"));
    let requests = server.await.unwrap();
    let lines: Vec<&str> = requests.iter().map(|r| r.lines().next().unwrap()).collect();
    assert!(
        lines[0].contains("from_index=5") && lines[0].contains("types=kv"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("after=5.1") && !lines[1].contains("from_index"),
        "{lines:?}"
    );
    assert!(lines[2].contains("after=7.0"), "{lines:?}");
    assert!(requests[0]
        .to_ascii_lowercase()
        .contains("authorization: bearer t"));
}
