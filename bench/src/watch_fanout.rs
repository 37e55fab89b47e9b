//! Conclave only, the `watch-fanout` workload (issue #13): `--watchers` streams of
//! `GET /v1/watch?types=kv&prefix=<run prefix>` (docs/watch.md), spread round-robin
//! over every node of `--urls` (followers included), while `--clients` writers put
//! 64-byte values under the prefix in a closed loop for `--duration` seconds (spread
//! over the nodes by `--placement`, as `put`).
//!
//! Measured:
//! - writes acknowledged per second (the run's ops, p50/p99 are the puts');
//! - events delivered per second, summed over all watchers, counting the events
//!   parsed within the window;
//! - the delivery lag of each event: the instant the watcher parsed its frame minus
//!   the instant the writer had the acknowledgement of that version (the put's
//!   `"version"` = the event's index), from a shared map version → ack instant. An
//!   event parsed before its ack (possible on the leader) has lag 0;
//! - exactness: every watcher must see every acknowledged write once, in order.
//!   Missing, duplicate or out-of-order deliveries, lagged or ended streams are
//!   **errors** of the run (kinds `watch …`), never dropped.
//!
//! Watchers open (200 received, so their start is fixed) before the first write.
//! After the window the writers' last puts finish, then the watchers get up to
//! [`DRAIN`] to reach the newest acknowledged version; what they have not seen by
//! then is missing. Also reported: the CPU each node (`--pids`), the load generator
//! and the machine used over the window, since on a small machine that is what
//! bounds the figures.
//!
//! The writers are client-library clients of their node (`conclave::Nodes`, each
//! put sent once). The streams stay raw reqwest on purpose: the library's `Watch`
//! resumes after a dropped connection and drops any event at or before the last id
//! it yielded, which is right for an agent and would hide here exactly what is
//! checked (duplicates, reordering, a stream that ended); it also decodes every
//! event's JSON, which the bench does not need for an event's id and type.
//!
//! etcd is not compared here: the bench has no etcd watch client.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use conclave_client::Client;

use crate::cli::RunArgs;
use crate::conclave::{kind, leader, transport_error, Nodes};
use crate::driver::{closed_loop, Measured, Progress};

/// How long after the last write the watchers may take to deliver the rest.
const DRAIN: Duration = Duration::from_secs(10);
/// Keys per writer (the key of put `n` is `<prefix><writer>/<n % KEYS>`).
const KEYS: u64 = 1000;

/// Version (command index) → the instant its writer had the acknowledgement.
type Acks = Mutex<HashMap<u64, Instant>>;

#[derive(Clone)]
struct Writer {
    api: Client,
    index: usize,
    prefix: Arc<str>,
    value: Arc<Value>,
    acks: Arc<Acks>,
}

/// What the watchers are told while they read.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Writing,
    /// The writers are done; stop once this version (the newest acknowledged) is seen.
    Drain(u64),
    /// Out of time: stop now.
    Stop,
}

pub async fn run(
    args: &RunArgs,
    writer_nodes: &Nodes,
    all: &Nodes,
    progress: Arc<Progress>,
) -> anyhow::Result<(Measured, Map<String, Value>)> {
    anyhow::ensure!(args.watchers > 0, "--watchers must be at least 1");
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let prefix: Arc<str> = format!("watch-fanout/{started_ms}/").into();

    // Every watcher on its own connection, out of a pool of their own.
    let streams_http = crate::conclave::http_client()?;
    let mut opening = Vec::with_capacity(args.watchers);
    for index in 0..args.watchers {
        let url = all.url(index).to_owned();
        let request = streams_http.get(format!("{url}/v1/watch?types=kv&prefix={prefix}"));
        opening.push(tokio::spawn(async move {
            let response = open_stream(request).await;
            (url, response)
        }));
    }
    let mut opened = Vec::with_capacity(args.watchers);
    for open in opening {
        let (url, response) = open.await?;
        let response =
            response.map_err(|kind| anyhow::anyhow!("opening a watch on {url}: {kind}"))?;
        opened.push((url, response));
    }

    let leader_url = leader(all).await.ok().map(|leader| leader.url);
    let acks: Arc<Acks> = Arc::default();
    let delivered = Arc::new(AtomicU64::new(0));
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Writing);
    let started = Instant::now();
    let window_end = started + Duration::from_secs(args.duration);
    let watchers: Vec<_> = opened
        .into_iter()
        .map(|(url, response)| {
            let (acks, delivered, phase) = (acks.clone(), delivered.clone(), phase_rx.clone());
            tokio::spawn(watch_stream(
                url, response, acks, delivered, phase, window_end,
            ))
        })
        .collect();
    let ticker = delivery_ticker(delivered.clone(), started);

    let cpu_before = CpuSample::take(&args.pids);
    let value = Arc::new(json!("x".repeat(64)));
    let writers: Vec<Writer> = (0..args.clients)
        .map(|index| Writer {
            api: writer_nodes.client(index).clone(),
            index,
            prefix: prefix.clone(),
            value: value.clone(),
            acks: acks.clone(),
        })
        .collect();
    let duration = Duration::from_secs(args.duration);
    let mut measured = closed_loop(writers, duration, progress, |writer, sequence| async move {
        let key = format!("{}{}/{}", writer.prefix, writer.index, sequence % KEYS);
        let written = writer.api.kv_put(&key, &writer.value).await.map_err(kind)?;
        let acknowledged = Instant::now();
        lock(&writer.acks).insert(written.version, acknowledged);
        Ok(())
    })
    .await?;
    let cpu = CpuSample::take(&args.pids).usage_since(&cpu_before);
    let writers_done = Instant::now();

    // Every write has its answer now (closed_loop waited for the last ones).
    let mut acked: Vec<u64> = lock(&acks).keys().copied().collect();
    acked.sort_unstable();
    let newest = acked.last().copied().unwrap_or(0);
    phase_tx.send_replace(Phase::Drain(newest));
    let phase_tx = Arc::new(phase_tx);
    let stopper = {
        let phase_tx = phase_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(DRAIN).await;
            phase_tx.send_replace(Phase::Stop);
        })
    };
    let mut streams = Vec::with_capacity(watchers.len());
    for watcher in watchers {
        streams.push(watcher.await?);
    }
    stopper.abort();
    drop(ticker);

    let acks = std::mem::take(&mut *lock(&acks));
    let mut check = Check::default();
    let mut by_node: BTreeMap<String, NodeLags> = BTreeMap::new();
    for stream in streams {
        let node = by_node.entry(stream.url.clone()).or_default();
        node.watchers += 1;
        check.add(stream, &acked, &acks, writers_done, node);
    }
    let mut lags_us = Vec::new();
    let mut nodes = Map::new();
    let mut shown_nodes = Vec::new();
    for (url, mut node) in by_node {
        node.lags_us.sort_unstable();
        let role = if leader_url.as_deref() == Some(url.as_str()) {
            " (leader)"
        } else {
            ""
        };
        shown_nodes.push(format!(
            "{url}{role} {} watchers p50={:.2}ms p90={:.2}ms p99={:.2}ms",
            node.watchers,
            ms(percentile(&node.lags_us, 0.5)),
            ms(percentile(&node.lags_us, 0.9)),
            ms(percentile(&node.lags_us, 0.99)),
        ));
        nodes.insert(
            url,
            json!({ "leader": !role.is_empty(), "watchers": node.watchers,
                "events": node.lags_us.len(), "lag_p50_us": percentile(&node.lags_us, 0.5),
                "lag_p90_us": percentile(&node.lags_us, 0.9),
                "lag_p99_us": percentile(&node.lags_us, 0.99),
                "lag_max_us": node.lags_us.last().copied().unwrap_or(0) }),
        );
        lags_us.append(&mut node.lags_us);
    }
    lags_us.sort_unstable();

    let elapsed = measured.elapsed.as_secs_f64().max(1e-9);
    let events_per_sec = check.in_window as f64 / elapsed;
    let (lag_p50, lag_p90, lag_p99) = (
        percentile(&lags_us, 0.5),
        percentile(&lags_us, 0.9),
        percentile(&lags_us, 0.99),
    );
    let before_ack_percent = check.before_ack as f64 * 100.0 / (lags_us.len().max(1) as f64);
    let lag_max = lags_us.last().copied().map_or(0, u64::from);
    let catch_up_ms = check.caught_up().map(|at| at.as_secs_f64() * 1000.0);
    println!(
        "watch-fanout watchers={} writes_acked={} events_delivered={} events/s={events_per_sec:.0} \
         lag p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms (parsed before the ack: \
         {before_ack_percent:.0}%) missing={} duplicates={} out_of_order={} \
         unacknowledged_deliveries={} all caught up {} after the last write",
        args.watchers,
        acked.len(),
        check.delivered,
        ms(lag_p50),
        ms(lag_p90),
        ms(lag_p99),
        ms(lag_max),
        check.missing,
        check.duplicates,
        check.out_of_order,
        check.unacknowledged,
        catch_up_ms.map_or_else(
            || format!("never ({} watchers still behind after {DRAIN:?})", check.behind),
            |ms| format!("{ms:.0} ms")
        ),
    );
    println!("watch-fanout lag by node: {}", shown_nodes.join("; "));
    let cpu_json = cpu.show(&args.urls, &args.pids, leader_url.as_deref());
    println!("watch-fanout (etcd not compared: the bench has no etcd watch client)");

    for (kind, count) in check.errors() {
        *measured.error_kinds.entry(kind).or_default() += count;
        measured.errors += count;
    }
    let mut extra = Map::new();
    extra.insert("watchers".into(), json!(args.watchers));
    extra.insert("writes_acked".into(), json!(acked.len()));
    extra.insert("events_delivered".into(), json!(check.delivered));
    extra.insert("events_in_window".into(), json!(check.in_window));
    extra.insert("events_per_sec".into(), json!(events_per_sec));
    extra.insert("lag_p50_us".into(), json!(lag_p50));
    extra.insert("lag_p90_us".into(), json!(lag_p90));
    extra.insert("lag_p99_us".into(), json!(lag_p99));
    extra.insert("before_ack_percent".into(), json!(before_ack_percent));
    extra.insert("lag_max_us".into(), json!(lag_max));
    extra.insert("lag_by_node".into(), Value::Object(nodes));
    extra.insert("missing".into(), json!(check.missing));
    extra.insert("duplicates".into(), json!(check.duplicates));
    extra.insert("out_of_order".into(), json!(check.out_of_order));
    extra.insert(
        "unacknowledged_deliveries".into(),
        json!(check.unacknowledged),
    );
    extra.insert("catch_up_ms".into(), json!(catch_up_ms));
    extra.insert("watchers_behind".into(), json!(check.behind));
    extra.insert("cpu".into(), cpu_json);
    extra.insert(
        "etcd_compared".into(),
        json!("no: the bench has no etcd watch client"),
    );
    Ok((measured, extra))
}

/// Sends a watch's request; a non-2xx answer is a failure of kind `http <status>`.
async fn open_stream(request: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
    let response = request
        .send()
        .await
        .map_err(|error| transport_error(&error))?;
    match response.status() {
        status if status.is_success() => Ok(response),
        status => Err(format!("http {}", status.as_u16())),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The value at `fraction` of sorted `values` (the report's rule).
fn percentile(values: &[u32], fraction: f64) -> u64 {
    let index = ((values.len() as f64 * fraction) as usize).min(values.len().saturating_sub(1));
    values.get(index).copied().map_or(0, u64::from)
}

/// Prints `[conclave watch-fanout events] Ns delivered=… (…/s)` to stderr once a
/// second until dropped, beside the writers' progress line.
struct Ticker(tokio::task::JoinHandle<()>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn delivery_ticker(delivered: Arc<AtomicU64>, started: Instant) -> Ticker {
    Ticker(tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.tick().await;
        let mut previous = 0;
        loop {
            interval.tick().await;
            let now = delivered.load(Ordering::Relaxed);
            eprintln!(
                "[conclave watch-fanout events] {:>3}s delivered={now} ({}/s)",
                started.elapsed().as_secs(),
                now - previous
            );
            previous = now;
        }
    }))
}

/// One watcher's record of its stream.
struct Stream {
    url: String,
    /// Versions seen, ascending (an out-of-order one is inserted in its place).
    seen: Vec<u64>,
    /// Delivery lags (µs) of events whose ack was known when they were parsed.
    lags_us: Vec<u32>,
    /// Events parsed before their ack was in the map: (version, parsed at).
    early: Vec<(u64, Instant)>,
    in_window: u64,
    /// Events parsed no later than their writer had the ack (lag 0).
    before_ack: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Frames that are neither `kv.put` nor ignorable (`cluster`, comments).
    unexpected: u64,
    /// Why the stream ended before it was told to stop (`lagged`, …).
    failure: Option<String>,
    /// When it saw the newest acknowledged version.
    caught_up: Option<Instant>,
}

impl Stream {
    fn new(url: String) -> Self {
        Self {
            url,
            seen: Vec::new(),
            lags_us: Vec::new(),
            early: Vec::new(),
            in_window: 0,
            before_ack: 0,
            duplicates: 0,
            out_of_order: 0,
            unexpected: 0,
            failure: None,
            caught_up: None,
        }
    }

    fn record(&mut self, version: u64, parsed: Instant, ack: Option<Instant>, window_end: Instant) {
        match self.seen.last() {
            Some(&last) if version <= last => match self.seen.binary_search(&version) {
                Ok(_) => {
                    self.duplicates += 1;
                    return;
                }
                Err(at) => {
                    self.out_of_order += 1;
                    self.seen.insert(at, version);
                }
            },
            _ => self.seen.push(version),
        }
        if parsed < window_end {
            self.in_window += 1;
        }
        match ack {
            Some(ack) => {
                self.before_ack += u64::from(parsed <= ack);
                self.lags_us.push(lag_us(parsed, ack));
            }
            None => self.early.push((version, parsed)),
        }
    }
}

/// `max(0, parsed − ack)` in µs.
fn lag_us(parsed: Instant, ack: Instant) -> u32 {
    let lag = parsed.saturating_duration_since(ack).as_micros();
    u32::try_from(lag).unwrap_or(u32::MAX)
}

async fn watch_stream(
    url: String,
    mut response: reqwest::Response,
    acks: Arc<Acks>,
    delivered: Arc<AtomicU64>,
    mut phase: tokio::sync::watch::Receiver<Phase>,
    window_end: Instant,
) -> Stream {
    let mut stream = Stream::new(url);
    let mut parser = SseParser::default();
    let mut events: Vec<(u64, Instant)> = Vec::new();
    loop {
        let current = *phase.borrow_and_update();
        match current {
            Phase::Stop => break,
            Phase::Drain(newest) if stream.seen.last().is_some_and(|&last| last >= newest) => {
                stream.caught_up.get_or_insert_with(Instant::now);
                break;
            }
            Phase::Drain(0) => break,
            _ => {}
        }
        let chunk = tokio::select! {
            chunk = response.chunk() => chunk,
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        };
        let bytes = match chunk {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                stream.failure = Some("watch stream ended".into());
                break;
            }
            Err(_) => {
                stream.failure = Some("watch transport".into());
                break;
            }
        };
        let mut lagged = false;
        parser.push(&bytes, |frame| match frame.kind {
            Kind::KvPut => match frame.id {
                Some((index, _)) => events.push((index, Instant::now())),
                None => stream.unexpected += 1,
            },
            Kind::Cluster | Kind::Message => {}
            Kind::Lagged => lagged = true,
            Kind::Other => stream.unexpected += 1,
        });
        if !events.is_empty() {
            delivered.fetch_add(events.len() as u64, Ordering::Relaxed);
            let acked = lock(&acks);
            for (version, parsed) in events.drain(..) {
                let ack = acked.get(&version).copied();
                stream.record(version, parsed, ack, window_end);
            }
        }
        if lagged {
            stream.failure = Some("watch lagged".into());
            break;
        }
    }
    stream
}

/// What the streams came to together.
#[derive(Default)]
struct Check {
    delivered: u64,
    in_window: u64,
    /// Events parsed no later than their ack (lag 0): on the leader, and wherever
    /// the write's answer (forwarded through a follower) took longer than the event.
    before_ack: u64,
    /// (watcher, acknowledged version) pairs never delivered.
    missing: u64,
    duplicates: u64,
    out_of_order: u64,
    unexpected: u64,
    /// Deliveries of versions no writer had an ack for (a put that failed after it
    /// was applied): told, not an error.
    unacknowledged: u64,
    failures: BTreeMap<String, u64>,
    slowest_catch_up: Duration,
    /// Watchers that never saw the newest acknowledged version.
    behind: u64,
}

#[derive(Default)]
struct NodeLags {
    watchers: usize,
    lags_us: Vec<u32>,
}

impl Check {
    fn add(
        &mut self,
        stream: Stream,
        acked: &[u64],
        acks: &HashMap<u64, Instant>,
        writers_done: Instant,
        node: &mut NodeLags,
    ) {
        node.lags_us.extend_from_slice(&stream.lags_us);
        // Parsed before the ack was in the map: lag max(0, parsed − ack), mostly 0.
        for (version, parsed) in &stream.early {
            if let Some(ack) = acks.get(version) {
                self.before_ack += u64::from(parsed <= ack);
                node.lags_us.push(lag_us(*parsed, *ack));
            }
        }
        let matched = sorted_intersection(&stream.seen, acked);
        self.missing += (acked.len() - matched) as u64;
        self.unacknowledged += (stream.seen.len() - matched) as u64;
        self.delivered += stream.seen.len() as u64;
        self.in_window += stream.in_window;
        self.before_ack += stream.before_ack;
        self.duplicates += stream.duplicates;
        self.out_of_order += stream.out_of_order;
        self.unexpected += stream.unexpected;
        if let Some(failure) = stream.failure {
            *self.failures.entry(failure).or_default() += 1;
        }
        match stream.caught_up {
            Some(at) => {
                let after = at.saturating_duration_since(writers_done);
                self.slowest_catch_up = self.slowest_catch_up.max(after);
            }
            None if !acked.is_empty() => self.behind += 1,
            None => {}
        }
    }

    /// Since the writers finished, until the last watcher had the newest
    /// acknowledged version; `None` when some watcher never got there.
    fn caught_up(&self) -> Option<Duration> {
        (self.behind == 0).then_some(self.slowest_catch_up)
    }

    /// The error kinds of the run: every departure from "each watcher saw each
    /// acknowledged write once, in order".
    fn errors(&self) -> Vec<(String, u64)> {
        let mut errors: Vec<(String, u64)> = [
            ("watch missing", self.missing),
            ("watch duplicate", self.duplicates),
            ("watch out of order", self.out_of_order),
            ("watch unexpected event", self.unexpected),
        ]
        .into_iter()
        .map(|(kind, count)| (kind.to_owned(), count))
        .collect();
        errors.extend(self.failures.clone());
        errors.retain(|(_, count)| *count > 0);
        errors
    }
}

/// How many values two ascending, duplicate-free slices share.
fn sorted_intersection(left: &[u64], right: &[u64]) -> usize {
    let (mut i, mut j, mut shared) = (0, 0, 0);
    while i < left.len() && j < right.len() {
        match left[i].cmp(&right[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                shared += 1;
                i += 1;
                j += 1;
            }
        }
    }
    shared
}

/// The event type of a frame, as far as this workload cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Kind {
    /// No `event:` field (SSE's default `message`); also comment-only frames.
    #[default]
    Message,
    KvPut,
    /// Node-local, no id: ignored.
    Cluster,
    Lagged,
    Other,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Frame {
    kind: Kind,
    id: Option<(u64, u64)>,
}

/// An incremental Server-Sent Events parser: feed it chunks as they arrive, it
/// calls back once per complete frame (lines up to an empty line). Comments (`:`),
/// `data:` and `retry:` are skipped; the `id` is parsed as `<index>.<seq>`.
#[derive(Default)]
struct SseParser {
    /// The unfinished last line of the previous chunk.
    partial: Vec<u8>,
    frame: Frame,
    /// The current frame has at least one field.
    open: bool,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8], mut on_frame: impl FnMut(Frame)) {
        let mut rest = chunk;
        if !self.partial.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                None => {
                    self.partial.extend_from_slice(rest);
                    return;
                }
                Some(end) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&rest[..end]);
                    self.line(&line, &mut on_frame);
                    rest = &rest[end + 1..];
                }
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let line = &rest[..end];
            self.line(line, &mut on_frame);
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    fn line(&mut self, line: &[u8], on_frame: &mut impl FnMut(Frame)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.open {
                on_frame(self.frame);
            }
            self.frame = Frame::default();
            self.open = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        self.open = true;
        match field {
            b"id" => self.frame.id = parse_id(value),
            b"event" => {
                self.frame.kind = match value {
                    b"kv.put" => Kind::KvPut,
                    b"cluster" => Kind::Cluster,
                    b"lagged" => Kind::Lagged,
                    b"message" => Kind::Message,
                    _ => Kind::Other,
                }
            }
            _ => {}
        }
    }
}

fn parse_id(value: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (index, seq) = text.trim().split_once('.')?;
    Some((index.parse().ok()?, seq.parse().ok()?))
}

/// CPU time consumed so far: each pid's (user + system, all threads), this
/// process's, and the machine's busy and total time, all in clock ticks.
struct CpuSample {
    at: Instant,
    pids: Vec<Option<u64>>,
    own: Option<u64>,
    machine: Option<(u64, u64)>,
}

/// `/proc`'s clock tick (USER_HZ), 100 on Linux.
const TICKS_PER_SEC: f64 = 100.0;

impl CpuSample {
    fn take(pids: &[u32]) -> Self {
        Self {
            at: Instant::now(),
            pids: pids
                .iter()
                .map(|&pid| process_ticks(&pid.to_string()))
                .collect(),
            own: process_ticks("self"),
            machine: machine_ticks(),
        }
    }

    fn usage_since(&self, before: &CpuSample) -> CpuUsage {
        let seconds = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let percent = |now: Option<u64>, was: Option<u64>| -> Option<f64> {
            Some((now?.checked_sub(was?)?) as f64 / TICKS_PER_SEC / seconds * 100.0)
        };
        CpuUsage {
            pids: self
                .pids
                .iter()
                .zip(&before.pids)
                .map(|(now, was)| percent(*now, *was))
                .collect(),
            own: percent(self.own, before.own),
            machine: match (self.machine, before.machine) {
                (Some((busy, total)), Some((was_busy, was_total))) if total > was_total => {
                    Some((busy - was_busy) as f64 / (total - was_total) as f64 * 100.0)
                }
                _ => None,
            },
        }
    }
}

/// Percent of one core over the window; `machine` is percent of all cores.
struct CpuUsage {
    pids: Vec<Option<f64>>,
    own: Option<f64>,
    machine: Option<f64>,
}

impl CpuUsage {
    /// Prints `watch-fanout cpu …` and returns it as JSON.
    fn show(&self, urls: &[String], pids: &[u32], leader_url: Option<&str>) -> Value {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut shown = Vec::new();
        let mut nodes = Vec::new();
        for (i, (pid, usage)) in pids.iter().zip(&self.pids).enumerate() {
            let url = urls.get(i).map_or("?", String::as_str);
            let leads = leader_url == Some(url);
            let role = if leads { " leader" } else { "" };
            let usage_text = usage.map_or("?".into(), |percent| format!("{percent:.0}%"));
            shown.push(format!("{url}{role} (pid {pid}) {usage_text}"));
            nodes.push(json!({ "url": url, "pid": pid, "leader": leads, "percent": usage }));
        }
        let own = self.own.map_or("?".into(), |p| format!("{p:.0}%"));
        let machine = self
            .machine
            .map_or("?".into(), |p| format!("{p:.0}% of {cores} cores"));
        println!(
            "watch-fanout cpu over the window (100% = one core): machine {machine}; {}; bench {own}",
            if shown.is_empty() {
                "nodes not measured (no --pids)".to_owned()
            } else {
                shown.join(", ")
            }
        );
        json!({ "cores": cores, "machine_percent": self.machine, "bench_percent": self.own,
            "nodes": nodes })
    }
}

/// utime + stime of a process (all its threads), from `/proc/<pid>/stat`.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_ticks(&stat)
}

fn parse_process_ticks(stat: &str) -> Option<u64> {
    // After the `(comm)`, which may hold spaces: field 3 (state) onwards; utime and
    // stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// (busy, total) ticks of all CPUs from `/proc/stat`; idle and iowait are not busy.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(&stat)
}

fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&str]) -> Vec<Frame> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk.as_bytes(), |frame| out.push(frame));
        }
        out
    }

    #[test]
    fn frames_split_anywhere_across_chunks_parse_the_same() {
        let text =
            "retry: 1000\n: watching from 12.0\n\nevent: cluster\ndata: {\"type\":\"cluster\"}\n\n\
                    id: 12.0\nevent: kv.put\ndata: {\"index\":12}\n\n: keep-alive\n\n\
                    id: 13.0\r\nevent: kv.put\r\ndata: {}\r\n\r\n";
        let expected = vec![
            Frame {
                kind: Kind::Message,
                id: None,
            },
            Frame {
                kind: Kind::Cluster,
                id: None,
            },
            Frame {
                kind: Kind::KvPut,
                id: Some((12, 0)),
            },
            Frame {
                kind: Kind::KvPut,
                id: Some((13, 0)),
            },
        ];
        assert_eq!(frames(&[text]), expected);
        for split in 1..text.len() {
            let (a, b) = text.split_at(split);
            assert_eq!(frames(&[a, b]), expected, "split at {split}");
        }
        let bytes: Vec<String> = text.chars().map(String::from).collect();
        let singles: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(frames(&singles), expected);
    }

    #[test]
    fn lagged_and_unknown_events_are_told_apart() {
        let got = frames(&["event: lagged\ndata: {}\n\nid: 3.1\nevent: kv.deleted\ndata: {}\n\n"]);
        assert_eq!(got[0].kind, Kind::Lagged);
        assert_eq!(got[1].kind, Kind::Other);
        assert_eq!(got[1].id, Some((3, 1)));
    }

    #[test]
    fn duplicates_and_reorders_are_counted_and_lag_is_never_negative() {
        let start = Instant::now();
        let later = start + Duration::from_millis(5);
        let mut stream = Stream::new("u".into());
        let end = start + Duration::from_secs(1);
        stream.record(10, later, Some(start), end);
        stream.record(12, start, Some(later), end);
        stream.record(12, later, Some(start), end);
        stream.record(11, later, None, end);
        assert_eq!(stream.seen, vec![10, 11, 12]);
        assert_eq!(stream.duplicates, 1);
        assert_eq!(stream.out_of_order, 1);
        assert_eq!(stream.lags_us, vec![5000, 0]);
        assert_eq!(stream.early.len(), 1);
        assert_eq!(stream.in_window, 3);
        assert_eq!(stream.before_ack, 1);

        let mut check = Check::default();
        let mut node = NodeLags::default();
        let acks: HashMap<u64, Instant> = [(10, start), (11, later), (12, start), (13, start)]
            .into_iter()
            .collect();
        check.add(stream, &[10, 11, 12, 13], &acks, start, &mut node);
        assert_eq!(check.missing, 1);
        assert_eq!(node.lags_us.len(), 3);
        let kinds: Vec<String> = check.errors().into_iter().map(|(kind, _)| kind).collect();
        assert_eq!(
            kinds,
            ["watch missing", "watch duplicate", "watch out of order"]
        );
    }

    #[test]
    fn cpu_ticks_are_read_from_proc_stat_lines() {
        let stat = "4242 (conclave serve) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0";
        assert_eq!(parse_process_ticks(stat), Some(300));
        let machine = "cpu  100 5 50 800 20 1 4 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_machine_ticks(machine), Some((160, 980)));
    }
}
