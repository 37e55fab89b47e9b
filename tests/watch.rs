//! The watch (`GET /v1/watch`, Server-Sent Events) on real `conclave` processes with
//! auth on: a follower's stream carries every write of a run exactly once in index
//! order; a resume by `from_index` or `Last-Event-ID` has no gap and no duplicate,
//! also on another node after the serving node is SIGKILLed; history past
//! retention is 410 `compacted`; a consumer that stops reading is sent `lagged` and
//! the server keeps nothing for it beyond its bound; the watcher bound is 429; an
//! agent's own stream (`session_id=`) hears its lock lost in the same tick that
//! expired its session; a token sees only what it may read. Waits are on the
//! stream itself or condition polls, never fixed sleeps.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{acquire, stream_client, Cluster, Options};
use conclave_client::SessionCreate;
use serde_json::{json, Value};

/// One SSE frame.
#[derive(Debug, Clone)]
struct Frame {
    id: Option<String>,
    event: String,
    data: Value,
}

impl Frame {
    fn id(&self) -> (u64, u32) {
        let id = self.id.as_deref().expect("an event with an id");
        let (index, seq) = id.split_once('.').unwrap();
        (index.parse().unwrap(), seq.parse().unwrap())
    }
}

/// A watch being read.
struct Sse {
    response: reqwest::Response,
    buffer: String,
    /// Bytes received so far.
    received: usize,
}

/// Opens `url` (raw HTTP: the SSE framing, `Last-Event-ID` and a stream that ends
/// with its node are this file's subject; the client's resuming stream would hide
/// them); a refusal comes back as its status and JSON body.
async fn open(
    http: &reqwest::Client,
    url: &str,
    last_event_id: Option<&str>,
) -> Result<Sse, (u16, Value)> {
    let mut request = http.get(url);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.expect("the watch request is sent");
    let status = response.status().as_u16();
    if status != 200 {
        return Err((status, response.json().await.unwrap_or(Value::Null)));
    }
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "an SSE stream"
    );
    Ok(Sse {
        response,
        buffer: String::new(),
        received: 0,
    })
}

impl Sse {
    /// The next frame with an `event:` (comments skipped), or `None` when the stream
    /// ended or `wait` passed without one.
    async fn next(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Frame {
                    id: None,
                    event: String::new(),
                    data: Value::Null,
                };
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        frame.id = Some(id.to_owned());
                    } else if let Some(event) = line.strip_prefix("event: ") {
                        frame.event = event.to_owned();
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        frame.data = serde_json::from_str(data).expect("data is JSON");
                    }
                }
                if !frame.event.is_empty() {
                    return Some(frame);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => {
                    self.received += bytes.len();
                    self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
                }
                _ => return None,
            }
        }
    }

    /// The next frame of type `event` (others skipped).
    async fn next_of(&mut self, event: &str, wait: Duration) -> Option<Frame> {
        loop {
            let frame = self.next(wait).await?;
            if frame.event == event {
                return Some(frame);
            }
        }
    }
}

const WAIT: Duration = Duration::from_secs(20);

/// Writes `w/<n>` = n for `n` in `range` through the nodes in turn, 8 at a time;
/// returns each acknowledged write's version by n.
async fn write_all(
    cluster: &Cluster,
    nodes: &[u64],
    range: std::ops::Range<u64>,
) -> BTreeMap<u64, u64> {
    let mut versions = BTreeMap::new();
    let numbers: Vec<u64> = range.collect();
    for group in numbers.chunks(8) {
        let writes = group.iter().map(|&n| {
            let api = cluster.api(nodes[n as usize % nodes.len()]);
            async move {
                let written = api.kv_put(&format!("w/{n}"), &json!(n)).await;
                (n, written.expect("written").version)
            }
        });
        versions.extend(futures_util::future::join_all(writes).await);
    }
    versions
}

/// Reads `kv.put` frames of `w/` keys until every n of `expected` was seen; checks
/// ids strictly increase, each write appears once with its value and version.
async fn read_writes(
    sse: &mut Sse,
    expected: &BTreeMap<u64, u64>,
    last: &mut Option<(u64, u32)>,
) -> Vec<Frame> {
    let mut seen = BTreeMap::new();
    let mut frames = Vec::new();
    while seen.len() < expected.len() {
        let frame = sse.next_of("kv.put", WAIT).await.unwrap_or_else(|| {
            panic!(
                "stream ended after {} of {} writes",
                seen.len(),
                expected.len()
            )
        });
        let id = frame.id();
        assert!(
            last.is_none_or(|last| id > last),
            "ids go up: {id:?} after {last:?}"
        );
        *last = Some(id);
        let n = frame.data["value"].as_u64().unwrap();
        assert_eq!(frame.data["key"], format!("w/{n}"));
        assert_eq!(frame.data["index"].as_u64(), Some(id.0));
        let Some(&version) = expected.get(&n) else {
            continue;
        };
        assert_eq!(frame.data["version"].as_u64(), Some(version), "{frame:?}");
        assert!(seen.insert(n, id).is_none(), "write {n} seen twice");
        frames.push(frame);
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_stream_has_every_write_once_in_order_and_resumes_without_gap_on_another_node()
{
    let _serial = common::serial().await;
    // A snapshot every 50 entries: the restarted node below starts from its own,
    // so it has no history before it. (The log behind a snapshot is kept, so no
    // follower needs one installed meanwhile: an install empties the history and
    // ends every watch on that node with `lagged`, as docs/watch.md says.)
    let raft = "[raft]\nsnapshot_logs_since_last = 50\n";
    let mut cluster = Cluster::start(
        3,
        Options {
            extra_toml: raft.into(),
            ..Options::default()
        },
    )
    .await;
    let leader = cluster.wait_for_leader(WAIT).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let http = stream_client(common::admin_token());
    let urls: Vec<String> = (1..=3).map(|id| cluster.url(id)).collect();
    let watch = |node: u64, query: &str| {
        format!(
            "{}/v1/watch?types=kv&prefix=w/&{query}",
            urls[node as usize - 1]
        )
    };

    // 1. A watcher on a follower, from the start, sees each of 1,000 writes once,
    //    in index order, with the acknowledged value and version.
    let mut sse = open(&http, &watch(follower, "from_index=1"), None)
        .await
        .unwrap();
    let first = write_all(&cluster, &[1, 2, 3], 0..1_000).await;
    let mut last = None;
    let frames = read_writes(&mut sse, &first, &mut last).await;

    // 2. A reconnect from the middle by from_index starts exactly there.
    let middle = &frames[500];
    let from = middle.id().0;
    let mut again = open(&http, &watch(follower, &format!("from_index={from}")), None)
        .await
        .unwrap();
    let rest: BTreeMap<u64, u64> = first
        .iter()
        .filter(|(_, v)| **v >= from)
        .map(|(n, v)| (*n, *v))
        .collect();
    let mut resumed_last = None;
    let resumed = read_writes(&mut again, &rest, &mut resumed_last).await;
    assert_eq!(resumed[0].id(), middle.id(), "inclusive of from_index");
    let tail: Vec<_> = frames[500..].iter().map(Frame::id).collect();
    assert_eq!(resumed.iter().map(Frame::id).collect::<Vec<_>>(), tail);
    drop(again);

    // 3. The watched node is SIGKILLed; the client resumes on another node from its
    //    last id (Last-Event-ID), and writes made meanwhile arrive once, no gap.
    let last_id = last.map(|(i, s)| format!("{i}.{s}")).unwrap();
    cluster.kill(follower);
    assert!(
        sse.next(WAIT).await.is_none(),
        "the stream ends with its node"
    );
    let others: Vec<u64> = (1..=3).filter(|&id| id != follower).collect();
    cluster.wait_for_leader(WAIT).await;
    let second = write_all(&cluster, &others, 1_000..1_100).await;
    let mut other = open(&http, &watch(others[0], ""), Some(&last_id))
        .await
        .unwrap();
    let mut after = last;
    read_writes(&mut other, &second, &mut after).await;
    // Nothing of the first run came again (ids only went up from the last one).
    assert!(after > last);

    // 4. The killed node restarts: its history starts after its snapshot (410 before
    //    it, with the oldest index), and from there it has exactly the ids every
    //    other node gave the same writes.
    cluster.spawn(follower);
    let target = cluster.status(others[0]).await.unwrap()["last_applied_index"]
        .as_u64()
        .unwrap();
    cluster.wait_applied(follower, target, WAIT).await;
    let third = write_all(&cluster, &[1, 2, 3], 1_100..1_120).await;
    let (status, body) = open(&http, &watch(follower, "from_index=1"), None)
        .await
        .err()
        .expect("history before the snapshot is gone");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("compacted")),
        "{body}"
    );
    let oldest = body["error"]["oldest_index"].as_u64().unwrap();
    let mut restarted = open(
        &http,
        &watch(follower, &format!("from_index={oldest}")),
        None,
    )
    .await
    .unwrap();
    let all: BTreeMap<u64, u64> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|(n, v)| (*n, *v))
        .collect();
    let kept: BTreeMap<u64, u64> = all
        .iter()
        .filter(|(_, v)| **v >= oldest)
        .map(|(n, v)| (*n, *v))
        .collect();
    assert!(
        kept.len() >= third.len(),
        "writes after the restart are all kept"
    );
    let replayed = read_writes(&mut restarted, &kept, &mut None).await;
    let ids: BTreeMap<u64, (u64, u32)> = frames
        .iter()
        .map(|f| (f.data["value"].as_u64().unwrap(), f.id()))
        .collect();
    for frame in &replayed {
        let n = frame.data["value"].as_u64().unwrap();
        if let Some(id) = ids.get(&n) {
            assert_eq!(*id, frame.id(), "write {n} has the same id on every node");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_compaction_lag_the_watcher_bound_and_an_agents_own_stream() {
    let _serial = common::serial().await;
    let limits =
        "[limits]\nwatch_history_events = 200\nwatch_history_bytes = 4194304\nmax_watchers = 3\n";
    let cluster = Cluster::start(
        1,
        Options {
            extra_toml: limits.into(),
            ..Options::default()
        },
    )
    .await;
    let base = cluster.url(1);
    let http = stream_client(common::admin_token());
    let versions = write_all(&cluster, &[1], 0..300).await;

    // 1. History beyond retention: 410 with the oldest index, which itself works.
    let (status, body) = open(&http, &format!("{base}/v1/watch?from_index=1"), None)
        .await
        .err()
        .expect("compacted");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("compacted")),
        "{body}"
    );
    let oldest = body["error"]["oldest_index"].as_u64().unwrap();
    assert!(oldest > 1 && oldest <= versions[&299], "{body}");
    let mut from_oldest = open(
        &http,
        &format!("{base}/v1/watch?from_index={oldest}&types=kv"),
        None,
    )
    .await
    .unwrap();
    let frame = from_oldest.next_of("kv.put", WAIT).await.unwrap();
    assert!(frame.id().0 >= oldest);
    let (status, body) = open(&http, &format!("{base}/v1/watch"), Some("1.0"))
        .await
        .err()
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("compacted"))
    );

    // 2. Bad input is a 400 with a code.
    for (query, code) in [
        ("types=kv.nope", "invalid_event_type"),
        ("after=12", "invalid_event_id"),
        ("from_index=x", "invalid_query"),
        ("after=1.0&from_index=3", "invalid_query"),
    ] {
        let (status, body) = open(&http, &format!("{base}/v1/watch?{query}"), None)
            .await
            .err()
            .unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }

    // 3. At most max_watchers streams per node: the next one is 429; one closing
    //    frees its slot.
    let second = open(&http, &format!("{base}/v1/watch"), None)
        .await
        .unwrap();
    let third = open(&http, &format!("{base}/v1/watch"), None)
        .await
        .unwrap();
    let (status, body) = open(&http, &format!("{base}/v1/watch"), None)
        .await
        .err()
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_watchers")),
        "{body}"
    );
    drop((from_oldest, second, third));
    let freed = common::wait_until(WAIT, || async {
        (common::metric(&cluster.http, &base, "conclave_watchers").await == 0).then_some(())
    })
    .await;
    assert!(freed.is_some(), "closed watches give their slots back");

    // 4. A consumer that stops reading: the server goes on writing until the
    //    connection's buffers are full, then the watcher falls behind by more than
    //    the history (4 MiB here) and is sent `lagged` (with where to resume) and
    //    closed; it was sent far less than was written, so nothing piled up for it.
    let mut slow = open(&http, &format!("{base}/v1/watch?types=kv"), None)
        .await
        .unwrap();
    let big = "x".repeat(100 * 1024);
    let mut written = 0;
    let api = cluster.api(1);
    for n in 0..300 {
        api.kv_put(&format!("big/{n}"), &json!(big)).await.unwrap();
        written += big.len();
    }
    let mut lagged = None;
    while let Some(frame) = slow.next(WAIT).await {
        if frame.event == "lagged" {
            lagged = Some(frame);
            break;
        }
    }
    let lagged = lagged.expect("a slow consumer is told it lagged");
    assert!(
        lagged.data["from_index"].as_u64().is_some(),
        "{:?}",
        lagged.data
    );
    assert!(slow.next(WAIT).await.is_none(), "and the stream ends");
    assert!(
        slow.received < written,
        "sent {} of {written} bytes",
        slow.received
    );
    assert_eq!(
        common::metric(&cluster.http, &base, "conclave_watch_lagged_total").await,
        1
    );

    // 5. An agent's own stream: its lock is lost in the same tick that expires its
    //    session, and another session's events are not in it.
    let agent_token = common::token("agent-a", &["agent"]);
    let agent = stream_client(&agent_token);
    let agent_api = common::api_as(&base, &agent_token);
    let create = SessionCreate {
        name: "a".into(),
        ttl_ms: Some(1000),
        ..SessionCreate::default()
    };
    let session = agent_api.session_create(&create).await.unwrap().session_id;
    let mut own = open(
        &agent,
        &format!("{base}/v1/watch?session_id={session}&types=session,lock"),
        None,
    )
    .await
    .unwrap();
    acquire(&agent_api, "job", session).await;
    let other = common::observer_session(&api, "other", 60_000).await;
    acquire(&api, "other", other).await;
    let granted = own.next_of("lock.granted", WAIT).await.unwrap();
    assert_eq!(granted.data["name"], "job");
    let expired = own
        .next(WAIT)
        .await
        .expect("the session expires without keepalives");
    assert_eq!(expired.event, "session.expired", "{expired:?}");
    let lost = own.next(WAIT).await.unwrap();
    assert_eq!(lost.event, "lock.lost", "{lost:?}");
    assert_eq!(lost.data["reason"], "session_expired");
    assert_eq!(lost.data["session_id"].as_u64(), Some(session));
    assert_eq!(
        lost.id().0,
        expired.id().0,
        "lost in the tick that expired the session"
    );

    // 6. A token sees only what it may read: agent:kv:jobs/ gets its keys only.
    let scoped = stream_client(&common::token("reader", &["agent:kv:jobs/"]));
    let mut mine = open(&scoped, &format!("{base}/v1/watch?types=kv,lock"), None)
        .await
        .unwrap();
    api.kv_put("secret/1", &json!(1)).await.unwrap();
    acquire(&api, "jobs", other).await;
    api.kv_put("jobs/1", &json!(2)).await.unwrap();
    let frame = mine.next(WAIT).await.unwrap();
    assert_eq!(
        (frame.event.as_str(), &frame.data["key"]),
        ("kv.put", &json!("jobs/1")),
        "{frame:?}"
    );
    // A wrong token is refused before any stream starts.
    let wrong = stream_client("not-a-token");
    let (status, _) = open(&wrong, &format!("{base}/v1/watch"), None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
}
