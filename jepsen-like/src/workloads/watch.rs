//! The watch checker, riding on the register cells: watchers follow `GET
//! /v1/watch?types=kv` while the register clients write, and every acknowledged
//! write must come out of the stream exactly once, as written.
//!
//! **Watchers.** The register workload starts two ([`start`]): one on the leader
//! and one on a follower (a watch is served by any node from its own applied
//! state). Each opens `?types=kv&from_index=1` and parses the SSE stream as it
//! arrives ([`Sse`]). A stream is kept for a random 1–6 s, then the watcher moves
//! to another node, as it does at once on an error, a closed stream, a `lagged`
//! farewell, a refusal (429, 503) or an unreachable node: every move is a resume
//! with `?after=<last id seen>` (`from_index=1` while nothing was seen), so a run
//! resumes dozens of times, across kills, pauses and partitions (a node cut off
//! from its peers falls behind, and a stream from it stalls until the move). A
//! `410 compacted` sends it to another node too; when every node has answered 410
//! and none has served the stream for [`GONE_FOR`], the stream cannot be resumed:
//! that is recorded and fails the check. After the run, once the register workload
//! has resolved what it could, the watcher is given the largest acknowledged
//! version and keeps going until it has seen an event at that index or later (at
//! most [`CATCH_UP`]; normally it is there already).
//!
//! **Checker** ([`check`], a pure function of the recorded stream and the
//! writes): (a) event ids strictly increase across the whole resumed stream (no
//! duplicate, no reordering), and every frame is well formed (its `id:` line, its
//! data's `id`, `index` and `type` agree; only `kv.*` types); (b) every
//! acknowledged write (`ok`, with the version its answer gave) appears exactly once
//! as a `kv.put` of the same key with the same value and `version` = `index` = the
//! acknowledged version; (c) no `kv.put` of a register key carries a value no client
//! attempted, none of a refused (`fail`) or unavailable (503 / 429 / never arrived)
//! write, and no register key is deleted (the workload never deletes).
//! Indeterminate writes may or may not appear, at most once. An acknowledged write
//! absent from a stream that went past its index is a **gap**; one beyond the
//! stream's last event is reported as not reached.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch as channel;

use super::{Check, CheckVerdict, Op, Status};

/// The keys whose writes are checked: the register workload's.
pub const KEY_PREFIX: &str = "register-";
/// How long one stream is kept before the watcher moves to another node
/// (milliseconds, drawn per stream).
const STREAM_LIFETIME_MS: std::ops::Range<u64> = 1_000..6_000;
/// How long a node may take to answer the request (the status line).
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// Every node answered `410 compacted` and none served the stream for this long:
/// the stream cannot be resumed.
pub const GONE_FOR: Duration = Duration::from_secs(10);
/// After the run: how long a watcher may take to reach the last acknowledged write.
pub const CATCH_UP: Duration = Duration::from_secs(30);
/// Pause before the next attempt after a failed one (a dead node refuses at once).
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Violations kept as evidence in the report.
const SHOWN: usize = 20;

/// One event as a watcher received it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `(command index, seq)`, from the frame's `id:` line.
    pub id: (u64, u32),
    /// The `event:` name (`kv.put`, `kv.deleted`, `kv.expired`).
    pub kind: String,
    pub key: String,
    /// A `kv.put`'s value (kept for the checked keys only, else `Null`).
    pub value: Value,
    /// A `kv.put`'s `version`.
    pub version: Option<u64>,
    /// The data's `index`.
    pub index: Option<u64>,
    /// Which stream delivered it (an index into [`WatchLog::connections`]).
    pub connection: usize,
}

/// One stream (or attempt to open one).
#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    /// 1-based node id.
    pub node: u64,
    /// `from_index=1` or `after=<id>`.
    pub start: String,
    pub opened_ns: u64,
    pub status: Option<u16>,
    /// What the server said it starts from (its `: watching from <id>` comment).
    pub server_start: Option<String>,
    pub events: u64,
    /// How it ended: `moved` (lifetime over), `caught-up`, `closed`, `lagged`,
    /// `error`, `gone` (410), `refused` (any other status), `no-answer`.
    pub ended: &'static str,
    pub detail: String,
}

/// Everything one watcher recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchLog {
    pub name: String,
    /// The node (1-based) its first stream was opened on.
    pub first_node: u64,
    /// Whether that node was the leader when the watcher started.
    pub first_was_leader: Option<bool>,
    pub events: Vec<Event>,
    pub connections: Vec<Connection>,
    /// Frames that could not be read as events (each a description).
    pub malformed: Vec<String>,
    /// Why the watcher stopped early (the stream could not be resumed).
    pub failures: Vec<String>,
    /// The largest acknowledged version it was asked to reach.
    pub target: Option<u64>,
    /// How long after being given the target it had seen it.
    pub catch_up_ms: Option<u64>,
}

impl WatchLog {
    fn last_id(&self) -> Option<(u64, u32)> {
        self.events.last().map(|e| e.id)
    }

    fn reached(&self, target: u64) -> bool {
        self.last_id().is_some_and(|(index, _)| index >= target) || target == 0
    }
}

/// One write a register client attempted, as the checker needs it.
#[derive(Debug, Clone)]
pub struct Write {
    pub key: String,
    pub value: Value,
    pub status: Status,
    /// The version its acknowledgement gave (`ok` only).
    pub version: Option<u64>,
}

/// The writes and CASes among the register workload's operations (after the
/// resolution of indeterminate ones).
pub fn writes_of(ops: &[Op]) -> Vec<Write> {
    ops.iter()
        .filter(|op| op.f == "write" || op.f == "cas")
        .map(|op| Write {
            key: op.key.clone(),
            value: op.value["value"].clone(),
            status: op.status,
            version: op.value["version"].as_u64(),
        })
        .collect()
}

/// The largest acknowledged version among `writes` (0 when none).
pub fn target_of(writes: &[Write]) -> u64 {
    writes
        .iter()
        .filter(|w| w.status == Status::Ok)
        .filter_map(|w| w.version)
        .max()
        .unwrap_or(0)
}

/// A running watcher.
pub struct Watch {
    target: channel::Sender<Option<u64>>,
    /// Aborted if the watch is dropped unjoined (the workload failed).
    task: Option<tokio::task::JoinHandle<WatchLog>>,
    name: String,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts a watcher named `name` on the leader (`on_follower` false) or on a
/// follower, as far as `/v1/cluster` says.
pub fn start(
    name: &str,
    urls: Vec<String>,
    on_follower: bool,
    seed: u64,
    started: Instant,
) -> Watch {
    let (target, target_rx) = channel::channel(None);
    let task = tokio::spawn(watcher(
        name.to_owned(),
        urls,
        on_follower,
        seed,
        started,
        target_rx,
    ));
    Watch {
        target,
        task: Some(task),
        name: name.to_owned(),
    }
}

impl Watch {
    /// Tells the watcher to stop once it has seen an event at index `target` or
    /// later (or after [`CATCH_UP`]).
    pub fn finish_at(&self, target: u64) {
        let _ = self.target.send(Some(target));
    }

    /// Waits for the watcher to stop ([`Watch::finish_at`] first).
    pub async fn join(mut self) -> WatchLog {
        let Some(task) = self.task.take() else {
            return WatchLog::default();
        };
        match task.await {
            Ok(log) => log,
            Err(e) => WatchLog {
                name: self.name.clone(),
                failures: vec![format!("the watcher task failed: {e}")],
                ..WatchLog::default()
            },
        }
    }
}

/// How a stream ended, for the watcher's next move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// It served (status 200) and then ended: moved on, closed, lagged, errored.
    Served,
    /// The target is reached.
    CaughtUp,
    /// 410 `compacted`.
    Gone,
    /// Never served: refused, unreachable, no answer.
    Failed,
}

async fn watcher(
    name: String,
    urls: Vec<String>,
    on_follower: bool,
    seed: u64,
    started: Instant,
    mut target: channel::Receiver<Option<u64>>,
) -> WatchLog {
    let mut log = WatchLog {
        name,
        ..WatchLog::default()
    };
    let http = match reqwest::Client::builder()
        .default_headers(crate::cluster::auth_headers())
        .connect_timeout(Duration::from_secs(1))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            log.failures.push(format!("no HTTP client: {e}"));
            return log;
        }
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let nodes = urls.len();
    let leader = leader_of(&http, &urls).await;
    let mut node = match leader {
        Some(leader) if on_follower => leader % nodes,
        Some(leader) => leader - 1,
        None => usize::from(on_follower) % nodes,
    };
    log.first_node = node as u64 + 1;
    log.first_was_leader = leader.map(|leader| leader == node + 1);
    // Since when, and from which nodes, nothing but 410 came.
    let mut gone: Option<(Instant, BTreeSet<usize>)> = None;
    let mut catch_up: Option<(u64, Instant)> = None;
    loop {
        if let Some(t) = *target.borrow() {
            let (t, since) = *catch_up.get_or_insert_with(|| (t, Instant::now()));
            log.target = Some(t);
            if log.reached(t) {
                log.catch_up_ms = Some(since.elapsed().as_millis() as u64);
                break;
            }
            if since.elapsed() >= CATCH_UP {
                break;
            }
        }
        let lifetime = Duration::from_millis(rng.gen_range(STREAM_LIFETIME_MS));
        let ended = stream(&http, &urls, node, lifetime, started, &mut log, &mut target).await;
        match ended {
            Ended::CaughtUp => continue,
            Ended::Served => gone = None,
            Ended::Gone => {
                let (since, nodes_gone) =
                    gone.get_or_insert_with(|| (Instant::now(), BTreeSet::new()));
                nodes_gone.insert(node);
                if nodes_gone.len() == nodes && since.elapsed() >= GONE_FOR {
                    let oldest: Vec<String> = log
                        .connections
                        .iter()
                        .rev()
                        .take(nodes)
                        .map(|c| format!("node {}: {}", c.node, c.detail))
                        .collect();
                    log.failures.push(format!(
                        "the stream could not be resumed after {}: every node answered 410 compacted for {} s ({})",
                        log.last_id().map_or("nothing".into(), |(i, s)| format!("{i}.{s}")),
                        since.elapsed().as_secs(),
                        oldest.join("; ")
                    ));
                    break;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Ended::Failed => tokio::time::sleep(RETRY_PAUSE).await,
        }
        if nodes > 1 {
            node = (node + rng.gen_range(1..nodes)) % nodes;
        }
    }
    log
}

/// The leader (1-based) per the first node that names one.
async fn leader_of(http: &reqwest::Client, urls: &[String]) -> Option<usize> {
    for url in urls {
        let answer = tokio::time::timeout(OPEN_TIMEOUT, async {
            http.get(format!("{url}/v1/cluster"))
                .send()
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()
        })
        .await;
        if let Ok(Some(info)) = answer {
            if let Some(leader) = info["leader_id"].as_u64() {
                if (1..=urls.len() as u64).contains(&leader) {
                    return Some(leader as usize);
                }
            }
        }
    }
    None
}

/// Opens one stream on `node`, resuming after the last event seen, and records
/// what it delivers until `lifetime` passes, it ends, or the target is reached.
async fn stream(
    http: &reqwest::Client,
    urls: &[String],
    node: usize,
    lifetime: Duration,
    started: Instant,
    log: &mut WatchLog,
    target: &mut channel::Receiver<Option<u64>>,
) -> Ended {
    let start = match log.last_id() {
        Some((index, seq)) => format!("after={index}.{seq}"),
        None => "from_index=1".to_owned(),
    };
    let url = format!("{}/v1/watch?types=kv&{start}", urls[node]);
    let conn = log.connections.len();
    log.connections.push(Connection {
        node: node as u64 + 1,
        start,
        opened_ns: started.elapsed().as_nanos() as u64,
        status: None,
        server_start: None,
        events: 0,
        ended: "",
        detail: String::new(),
    });
    let end = |log: &mut WatchLog, ended: &'static str, detail: String, how: Ended| {
        log.connections[conn].ended = ended;
        log.connections[conn].detail = detail;
        how
    };
    let until = tokio::time::Instant::now() + lifetime;
    let mut response = match tokio::time::timeout(OPEN_TIMEOUT, http.get(&url).send()).await {
        Err(_) => return end(log, "no-answer", String::new(), Ended::Failed),
        Ok(Err(e)) => return end(log, "error", e.to_string(), Ended::Failed),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    log.connections[conn].status = Some(status);
    if status != 200 {
        let body = tokio::time::timeout(OPEN_TIMEOUT, response.json::<Value>())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(Value::Null);
        let detail = body["error"].to_string();
        return if status == 410 {
            end(log, "gone", detail, Ended::Gone)
        } else {
            end(log, "refused", detail, Ended::Failed)
        };
    }
    let mut sse = Sse::default();
    loop {
        if let Some(t) = *target.borrow() {
            if log.reached(t) {
                return end(log, "caught-up", String::new(), Ended::CaughtUp);
            }
        }
        let chunk = tokio::select! {
            chunk = tokio::time::timeout_at(until, response.chunk()) => chunk,
            Ok(()) = target.changed() => continue,
        };
        let bytes = match chunk {
            Err(_) => return end(log, "moved", String::new(), Ended::Served),
            Ok(Err(e)) => return end(log, "error", e.to_string(), Ended::Served),
            Ok(Ok(None)) => return end(log, "closed", String::new(), Ended::Served),
            Ok(Ok(Some(bytes))) => bytes,
        };
        for item in sse.feed(&bytes) {
            match item {
                Item::Comment(text) => {
                    if let Some(from) = text.strip_prefix("watching from ") {
                        log.connections[conn].server_start = Some(from.to_owned());
                    }
                }
                Item::Frame(frame) if frame.event.as_deref() == Some("lagged") => {
                    return end(log, "lagged", frame.data, Ended::Served);
                }
                Item::Frame(frame) if frame.event.as_deref() == Some("cluster") => {}
                Item::Frame(frame) => match parse_event(&frame, conn) {
                    Ok(event) => {
                        log.connections[conn].events += 1;
                        log.events.push(event);
                    }
                    Err(problem) => log
                        .malformed
                        .push(format!("node {}: {problem}: {frame:?}", node + 1)),
                },
            }
        }
    }
}

/// Reads an event frame; `Err` says what is wrong with it.
fn parse_event(frame: &Frame, connection: usize) -> Result<Event, String> {
    let id_text = frame.id.as_deref().ok_or("an event without an id")?;
    let id = parse_id(id_text).ok_or("an unreadable id")?;
    let kind = frame.event.clone().ok_or("an event without a type")?;
    let data: Value =
        serde_json::from_str(&frame.data).map_err(|e| format!("data not JSON ({e})"))?;
    if data["id"] != id_text {
        return Err("the data's id is not the frame's".into());
    }
    if data["type"] != kind.as_str() {
        return Err("the data's type is not the frame's".into());
    }
    let index = data["index"].as_u64();
    if index != Some(id.0) || data["seq"].as_u64() != Some(u64::from(id.1)) {
        return Err("the data's index.seq is not the id".into());
    }
    let key = data["key"].as_str().unwrap_or_default().to_owned();
    let value = if key.starts_with(KEY_PREFIX) {
        data["value"].clone()
    } else {
        Value::Null
    };
    Ok(Event {
        id,
        kind,
        key,
        value,
        version: data["version"].as_u64(),
        index,
        connection,
    })
}

/// Parses `<index>.<seq>`.
pub fn parse_id(text: &str) -> Option<(u64, u32)> {
    let (index, seq) = text.trim().split_once('.')?;
    Some((index.parse().ok()?, seq.parse().ok()?))
}

/// One SSE frame (fields as sent; `data` lines joined with `\n`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// What the SSE parser hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Frame(Frame),
    /// A `:` line (keep-alives, the opening `watching from`), without the colon.
    Comment(String),
}

/// An incremental SSE parser: bytes in whatever pieces they arrive, frames out
/// as each blank line completes one.
#[derive(Debug, Default)]
pub struct Sse {
    pending: Vec<u8>,
    frame: Frame,
    started: bool,
}

impl Sse {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Item> {
        self.pending.extend_from_slice(bytes);
        let mut items = Vec::new();
        let mut from = 0;
        while let Some(at) = self.pending[from..].iter().position(|&b| b == b'\n') {
            let raw = &self.pending[from..from + at];
            from += at + 1;
            let line = String::from_utf8_lossy(raw.strip_suffix(b"\r").unwrap_or(raw));
            if line.is_empty() {
                if self.started {
                    items.push(Item::Frame(std::mem::take(&mut self.frame)));
                    self.started = false;
                }
                continue;
            }
            if let Some(comment) = line.strip_prefix(':') {
                items.push(Item::Comment(comment.trim().to_owned()));
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (&*line, ""),
            };
            match field {
                "id" => self.frame.id = Some(value.to_owned()),
                "event" => self.frame.event = Some(value.to_owned()),
                "data" => {
                    if self.started && !self.frame.data.is_empty() {
                        self.frame.data.push('\n');
                    }
                    self.frame.data.push_str(value);
                }
                // `retry:` and anything unknown.
                _ => continue,
            }
            self.started = true;
        }
        self.pending.drain(..from);
        items
    }
}

/// Judges one watcher's stream against the writes (see the module doc).
pub fn check(log: &WatchLog, writes: &[Write]) -> Check {
    let mut violations: Vec<Value> = Vec::new();
    let node_of = |e: &Event| log.connections.get(e.connection).map_or(0, |c| c.node);
    // (a) One stream, in order.
    for pair in log.events.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        if after.id <= before.id {
            violations.push(json!({
                "kind": if after.id == before.id { "duplicate-id" } else { "out-of-order" },
                "id": id_text(after.id),
                "after": id_text(before.id),
                "node": node_of(after),
                "previous_node": node_of(before),
            }));
        }
    }
    for problem in &log.malformed {
        violations.push(json!({ "kind": "malformed", "frame": problem }));
    }
    for failure in &log.failures {
        violations.push(json!({ "kind": "not-resumable", "message": failure }));
    }
    for event in log.events.iter().filter(|e| !e.kind.starts_with("kv.")) {
        violations.push(json!({
            "kind": "unrequested-type", "type": event.kind, "id": id_text(event.id),
        }));
    }
    // (b), (c): the writes against the puts of the register keys.
    let checked: Vec<&Event> = log
        .events
        .iter()
        .filter(|e| e.key.starts_with(KEY_PREFIX))
        .collect();
    let mut puts_by_value: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    let mut puts_by_index: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
    for event in &checked {
        if event.kind == "kv.put" {
            puts_by_value
                .entry(event.value.to_string())
                .or_default()
                .push(event);
            if let Some(index) = event.index {
                puts_by_index.entry(index).or_default().push(event);
            }
        } else {
            violations.push(json!({
                "kind": "unexpected-removal", "type": event.kind, "key": event.key,
                "id": id_text(event.id),
            }));
        }
    }
    // The furthest the stream got (its last event, unless it went backwards).
    let last_index = log.events.iter().map(|e| e.id.0).max().unwrap_or(0);
    let target = target_of(writes);
    let attempted: BTreeSet<String> = writes.iter().map(|w| w.value.to_string()).collect();
    let mut explained: BTreeSet<(u64, u32)> = BTreeSet::new();
    let (mut acknowledged, mut matched, mut unreached) = (0u64, 0u64, 0u64);
    let (mut indeterminate, mut indeterminate_seen) = (0u64, 0u64);
    for write in writes.iter().filter(|w| w.key.starts_with(KEY_PREFIX)) {
        let seen = puts_by_value
            .get(&write.value.to_string())
            .map_or(&[][..], Vec::as_slice);
        let ids: Vec<String> = seen.iter().map(|e| id_text(e.id)).collect();
        if seen.len() > 1 {
            violations.push(json!({
                "kind": "applied-twice", "key": write.key, "value": write.value,
                "status": write.status, "ids": ids,
            }));
        }
        for event in seen.iter().filter(|e| e.key != write.key) {
            violations.push(json!({
                "kind": "wrong-key", "key": write.key, "value": write.value,
                "event_key": event.key, "id": id_text(event.id),
            }));
        }
        match write.status {
            Status::Ok => {
                acknowledged += 1;
                if let [event] = seen {
                    match write.version {
                        Some(v) if event.version != Some(v) || event.index != Some(v) => violations
                            .push(json!({
                                "kind": "wrong-version", "key": write.key, "value": write.value,
                                "acknowledged_version": v, "event_version": event.version,
                                "event_index": event.index, "id": id_text(event.id),
                            })),
                        _ if event.key == write.key => matched += 1,
                        _ => {}
                    }
                } else if seen.is_empty() {
                    let other = write
                        .version
                        .and_then(|v| puts_by_index.get(&v))
                        .and_then(|puts| puts.iter().find(|e| e.key == write.key));
                    match (other, write.version) {
                        (Some(event), _) => {
                            explained.insert(event.id);
                            violations.push(json!({
                                "kind": "wrong-value", "key": write.key,
                                "acknowledged_value": write.value, "event_value": event.value,
                                "version": write.version, "id": id_text(event.id),
                            }));
                        }
                        (None, Some(v)) if v > last_index => unreached += 1,
                        (None, _) => violations.push(json!({
                            "kind": "gap", "key": write.key, "value": write.value,
                            "version": write.version, "stream_reached": last_index,
                            "message": "acknowledged, absent from a stream that went past its index",
                        })),
                    }
                }
            }
            Status::Unknown => {
                indeterminate += 1;
                indeterminate_seen += u64::from(!seen.is_empty());
            }
            Status::Fail | Status::Unavailable => {
                if !seen.is_empty() {
                    violations.push(json!({
                        "kind": "refused-but-applied", "key": write.key, "value": write.value,
                        "status": write.status, "ids": ids,
                    }));
                }
            }
        }
    }
    if unreached > 0 || target > last_index {
        violations.push(json!({
            "kind": "not-reached",
            "message": format!(
                "the stream's last event is at index {last_index}, the last acknowledged write at {target}: {unreached} acknowledged writes beyond it never came"
            ),
        }));
    }
    let puts = checked.iter().filter(|e| e.kind == "kv.put").count();
    for event in checked
        .iter()
        .filter(|e| e.kind == "kv.put" && !explained.contains(&e.id))
    {
        if !attempted.contains(&event.value.to_string()) {
            violations.push(json!({
                "kind": "phantom", "key": event.key, "value": event.value,
                "version": event.version, "id": id_text(event.id), "node": node_of(event),
            }));
        }
    }

    let mut ended: BTreeMap<&str, u64> = BTreeMap::new();
    for connection in &log.connections {
        *ended.entry(connection.ended).or_default() += 1;
    }
    let served = log
        .connections
        .iter()
        .filter(|c| c.status == Some(200))
        .count();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for v in &violations {
        *kinds
            .entry(v["kind"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let leader = match log.first_was_leader {
        Some(true) => " (leader)",
        Some(false) => " (follower)",
        None => "",
    };
    let mut summary = format!(
        "{} kv events ({puts} register puts) from node {}{leader} on, over {served} streams ({} opened in all, ended: {}); {matched}/{acknowledged} acknowledged writes seen exactly once as written, {indeterminate_seen}/{indeterminate} indeterminate seen; reached index {last_index} (last acknowledged {target}{})",
        log.events.len(),
        log.first_node,
        log.connections.len(),
        ended
            .iter()
            .map(|(how, n)| format!("{how} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        log.catch_up_ms
            .map_or(String::new(), |ms| format!(", caught up {ms} ms after the run")),
    );
    let verdict = if violations.is_empty() {
        CheckVerdict::Pass
    } else {
        summary.push_str(&format!(
            "; {} violations: {}",
            violations.len(),
            kinds
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        CheckVerdict::Fail
    };
    let detail = json!({
        "violations": violations.iter().take(SHOWN).collect::<Vec<_>>(),
        "violation_kinds": kinds,
        "first_node": log.first_node,
        "first_was_leader": log.first_was_leader,
        "events": log.events.len(),
        "register_puts": puts,
        "acknowledged": acknowledged,
        "matched": matched,
        "indeterminate": indeterminate,
        "indeterminate_seen": indeterminate_seen,
        "last_index": last_index,
        "target": target,
        "catch_up_ms": log.catch_up_ms,
        "streams_ended": ended,
        "last_streams": log.connections.iter().rev().take(10).collect::<Vec<_>>(),
    });
    Check::new(&log.name, verdict, summary, detail)
}

fn id_text((index, seq): (u64, u32)) -> String {
    format!("{index}.{seq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(id: (u64, u32), key: &str, value: i64) -> Event {
        Event {
            id,
            kind: "kv.put".into(),
            key: key.into(),
            value: json!(value),
            version: Some(id.0),
            index: Some(id.0),
            connection: 0,
        }
    }

    fn write(key: &str, value: i64, status: Status, version: Option<u64>) -> Write {
        Write {
            key: key.into(),
            value: json!(value),
            status,
            version,
        }
    }

    fn log(events: Vec<Event>) -> WatchLog {
        WatchLog {
            name: "watch-leader".into(),
            first_node: 1,
            events,
            connections: vec![Connection {
                node: 1,
                start: "from_index=1".into(),
                opened_ns: 0,
                status: Some(200),
                server_start: Some("1.0".into()),
                events: 0,
                ended: "caught-up",
                detail: String::new(),
            }],
            ..WatchLog::default()
        }
    }

    fn kinds(check: &Check) -> Vec<String> {
        check.detail["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Writes: two acknowledged, one indeterminate (seen), one indeterminate (not
    /// seen), one refused CAS (never seen); a bank key's put in between.
    fn writes() -> Vec<Write> {
        vec![
            write("register-0-0", 1, Status::Ok, Some(5)),
            write("register-0-1", 2, Status::Unknown, None),
            write("register-0-0", 3, Status::Ok, Some(9)),
            write("register-0-1", 4, Status::Unknown, None),
            write("register-0-1", 5, Status::Fail, None),
        ]
    }

    fn good_events() -> Vec<Event> {
        let mut bank = put((6, 0), "bank/a", 0);
        bank.value = Value::Null;
        vec![
            put((5, 0), "register-0-0", 1),
            bank,
            put((7, 0), "register-0-1", 2),
            put((9, 0), "register-0-0", 3),
        ]
    }

    #[test]
    fn a_correct_stream_passes() {
        let result = check(&log(good_events()), &writes());
        assert_eq!(result.verdict, CheckVerdict::Pass, "{}", result.summary);
        assert!(
            result.summary.contains("2/2 acknowledged"),
            "{}",
            result.summary
        );
        assert!(
            result.summary.contains("1/2 indeterminate"),
            "{}",
            result.summary
        );
    }

    #[test]
    fn a_missing_write_a_duplicate_id_and_a_wrong_value_in_one_stream_are_each_reported() {
        let mut events = good_events();
        events.remove(0); // the write acknowledged at 5 is missing
        events.insert(1, events[0].clone()); // 6.0 twice
        events[3].value = json!(33); // 9.0 carries a value nobody wrote there
        let result = check(&log(events), &writes());
        assert_eq!(result.verdict, CheckVerdict::Fail);
        assert_eq!(kinds(&result), ["duplicate-id", "gap", "wrong-value"]);
        assert!(
            result.summary.contains("3 violations"),
            "{}",
            result.summary
        );
    }

    #[test]
    fn a_missing_acknowledged_write_is_a_gap_or_not_reached() {
        // 5 is absent though the stream went on to 9: a gap.
        let events: Vec<Event> = good_events().into_iter().filter(|e| e.id.0 != 5).collect();
        let result = check(&log(events), &writes());
        assert_eq!(result.verdict, CheckVerdict::Fail);
        assert_eq!(kinds(&result), ["gap"]);
        // The stream stopped before 9: not reached.
        let events: Vec<Event> = good_events().into_iter().filter(|e| e.id.0 != 9).collect();
        let result = check(&log(events), &writes());
        assert_eq!(kinds(&result), ["not-reached"]);
    }

    #[test]
    fn a_duplicate_or_reordered_id_is_reported() {
        let mut events = good_events();
        events.insert(1, events[0].clone());
        let result = check(&log(events), &writes());
        assert_eq!(result.verdict, CheckVerdict::Fail);
        // The same event twice is also the same write applied twice.
        assert_eq!(kinds(&result), ["duplicate-id", "applied-twice"]);
        let mut events = good_events();
        events.swap(2, 3);
        let result = check(&log(events), &writes());
        assert_eq!(kinds(&result), ["out-of-order"]);
    }

    #[test]
    fn a_wrong_value_version_or_key_is_reported() {
        let mut events = good_events();
        events[3].value = json!(33);
        let result = check(&log(events), &writes());
        assert_eq!(result.verdict, CheckVerdict::Fail);
        assert_eq!(kinds(&result), ["wrong-value"]);
        let mut events = good_events();
        events[3].version = Some(8);
        assert_eq!(kinds(&check_of(events)), ["wrong-version"]);
        let mut events = good_events();
        events[3].key = "register-0-1".into();
        assert_eq!(kinds(&check_of(events)), ["wrong-key"]);
    }

    fn check_of(events: Vec<Event>) -> Check {
        check(&log(events), &writes())
    }

    #[test]
    fn phantoms_refused_writes_applied_and_double_applications_are_reported() {
        let mut events = good_events();
        events.push(put((10, 0), "register-0-1", 77));
        assert_eq!(kinds(&check_of(events)), ["phantom"]);
        let mut events = good_events();
        events.push(put((10, 0), "register-0-1", 5));
        assert_eq!(kinds(&check_of(events)), ["refused-but-applied"]);
        let mut events = good_events();
        events.push(put((10, 0), "register-0-1", 2));
        assert_eq!(kinds(&check_of(events)), ["applied-twice"]);
        let mut events = good_events();
        events.push(Event {
            kind: "kv.deleted".into(),
            value: Value::Null,
            version: None,
            ..put((10, 0), "register-0-1", 0)
        });
        assert_eq!(kinds(&check_of(events)), ["unexpected-removal"]);
    }

    #[test]
    fn a_stream_that_could_not_be_resumed_fails() {
        let mut log = log(good_events());
        log.failures.push("every node answered 410".into());
        let result = check(&log, &writes());
        assert_eq!(result.verdict, CheckVerdict::Fail);
        assert_eq!(kinds(&result), ["not-resumable"]);
    }

    #[test]
    fn the_sse_parser_takes_bytes_in_any_pieces() {
        let text = "retry: 1000\n: watching from 1.0\n\nid: 5.0\nevent: kv.put\ndata: {\"id\":\"5.0\"}\n\n: keep-alive\n\nevent: cluster\ndata: {}\n\nid: 7.1\r\nevent: kv.deleted\r\ndata: a\r\ndata: b\r\n\r\n";
        let expected = vec![
            Item::Comment("watching from 1.0".into()),
            Item::Frame(Frame {
                id: Some("5.0".into()),
                event: Some("kv.put".into()),
                data: "{\"id\":\"5.0\"}".into(),
            }),
            Item::Comment("keep-alive".into()),
            Item::Frame(Frame {
                id: None,
                event: Some("cluster".into()),
                data: "{}".into(),
            }),
            Item::Frame(Frame {
                id: Some("7.1".into()),
                event: Some("kv.deleted".into()),
                data: "a\nb".into(),
            }),
        ];
        for piece in [1, 2, 7, 1000] {
            let mut sse = Sse::default();
            let mut items = Vec::new();
            for chunk in text.as_bytes().chunks(piece) {
                items.extend(sse.feed(chunk));
            }
            assert_eq!(items, expected, "pieces of {piece}");
        }
    }

    #[test]
    fn frames_are_read_as_events_and_inconsistent_ones_are_refused() {
        let frame = |id: &str, data: &str| Frame {
            id: Some(id.into()),
            event: Some("kv.put".into()),
            data: data.into(),
        };
        let good = r#"{"id":"12.0","index":12,"seq":0,"type":"kv.put","key":"register-1-2","value":7,"version":12,"create_index":3}"#;
        let event = parse_event(&frame("12.0", good), 3).unwrap();
        assert_eq!(event.id, (12, 0));
        assert_eq!(event.value, json!(7));
        assert_eq!(
            (event.version, event.index, event.connection),
            (Some(12), Some(12), 3)
        );
        assert!(parse_event(&frame("12.1", good), 0).is_err());
        assert!(parse_event(&frame("12.0", "{"), 0).is_err());
        assert!(parse_event(
            &Frame {
                id: None,
                ..frame("", good)
            },
            0
        )
        .is_err());
    }
}
