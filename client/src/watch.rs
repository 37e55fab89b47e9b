//! [`Watch`]: `GET /v1/watch` as a `futures::Stream` of [`Event`]s that survives
//! its node. On a disconnect, an idle connection (no byte, not even the server's
//! keep-alive comment, for `idle_timeout`), a `503` or `429 too_many_watchers`, it
//! moves to the next endpoint and resumes right after the last event it yielded
//! (`Last-Event-ID`), so the stream has no gap and no duplicate (events at or before
//! the last id are also dropped here). `event: lagged` is yielded as
//! [`Error::Lagged`] (polling on resumes after the last id); `410 compacted` and
//! other refusals are yielded as [`Error::Api`] and end the stream.
//!
//! Owns the stream's connection state; depends on the client's endpoint list and
//! the SSE parser, never on the session, lock or worker helpers.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::sse::{Frame, Parser};
use crate::{error, query_pairs, Client, Error};

/// Where a watch starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WatchStart {
    /// With the next event applied.
    #[default]
    Now,
    /// With the first event of command index `n` (inclusive).
    FromIndex(u64),
    /// Right after event id `<index>.<seq>`.
    After(String),
}

/// The query of a watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Comma-separated types or families (`kv`, `lock.lost`, ...).
    pub types: Option<String>,
    pub prefix: Option<String>,
    /// Only events that concern this session.
    pub session_id: Option<u64>,
    pub start: WatchStart,
    /// No byte for this long (the server sends a comment every 5 s) and the
    /// connection counts as dead (default 15 s).
    pub idle_timeout: Duration,
    /// Also yield the node-local `cluster` frames (no id; default off).
    pub cluster_frames: bool,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions {
            types: None,
            prefix: None,
            session_id: None,
            start: WatchStart::Now,
            idle_timeout: Duration::from_secs(15),
            cluster_frames: false,
        }
    }
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `<index>.<seq>`; `None` on a node-local `cluster` frame.
    pub id: Option<String>,
    /// The command index that caused it.
    pub index: u64,
    pub seq: u64,
    /// `kv.put`, `lock.lost`, ...
    pub event_type: String,
    /// The whole event object (`id`, `index`, `seq`, `type` and its fields).
    pub data: Value,
}

impl Event {
    /// One field of the event (`Null` when absent).
    pub fn field(&self, name: &str) -> &Value {
        self.data.get(name).unwrap_or(&Value::Null)
    }
}

/// Where the stream is: for callers that want to know, and for tests.
#[derive(Debug, Default)]
struct Position {
    last_event_id: Option<String>,
    endpoint: Option<Url>,
    reconnects: u64,
}

/// A resuming event stream (see the module docs). Yields `Err` items for
/// failures; after `Error::Lagged` or a reconnection failure, polling on retries,
/// after any other error the stream ends.
pub struct Watch {
    stream: Pin<Box<dyn Stream<Item = Result<Event, Error>> + Send>>,
    position: Arc<Mutex<Position>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("position", &self.position)
            .finish()
    }
}

impl Watch {
    /// The id of the last event yielded.
    pub fn last_event_id(&self) -> Option<String> {
        self.position.lock().unwrap().last_event_id.clone()
    }

    /// The endpoint of the current (or last) connection.
    pub fn endpoint(&self) -> Option<Url> {
        self.position.lock().unwrap().endpoint.clone()
    }

    /// How many times the stream connected again after its first connection.
    pub fn reconnects(&self) -> u64 {
        self.position.lock().unwrap().reconnects
    }
}

impl Stream for Watch {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}

impl Client {
    /// `GET /v1/watch` as a resuming stream (see [`Watch`]).
    pub fn watch(&self, options: WatchOptions) -> Watch {
        let position = Arc::new(Mutex::new(Position::default()));
        let state = State {
            client: self.clone(),
            options,
            position: position.clone(),
            last: None,
            connection: None,
            parser: Parser::default(),
            queue: VecDeque::new(),
            done: false,
            connected_once: false,
        };
        let stream = futures_util::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        });
        Watch {
            stream: Box::pin(stream),
            position,
        }
    }
}

struct State {
    client: Client,
    options: WatchOptions,
    position: Arc<Mutex<Position>>,
    /// `(index, seq)` and id of the last event yielded.
    last: Option<((u64, u64), String)>,
    connection: Option<(usize, reqwest::Response)>,
    parser: Parser,
    queue: VecDeque<Result<Event, Error>>,
    done: bool,
    connected_once: bool,
}

/// What a connection attempt gave.
enum Connect {
    Open(usize, reqwest::Response),
    /// Try another endpoint.
    Retry(Error),
    /// End the stream with this error.
    Fatal(Error),
}

impl State {
    async fn next(&mut self) -> Option<Result<Event, Error>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            if self.connection.is_none() {
                if let Err(error) = self.reconnect().await {
                    return Some(Err(error));
                }
                continue;
            }
            self.read().await;
        }
    }

    /// Connects to some endpoint, moving on with backoff within the client's call
    /// timeout; the last error when none would serve.
    async fn reconnect(&mut self) -> Result<(), Error> {
        let policy = self.client.inner.policy.clone();
        let started = tokio::time::Instant::now();
        let timeout = policy.timeout.unwrap_or(Duration::from_secs(30));
        let mut backoff = policy.backoff_initial;
        loop {
            match self.connect().await {
                Connect::Open(slot, response) => {
                    let mut position = self.position.lock().unwrap();
                    if self.connected_once {
                        position.reconnects += 1;
                    }
                    self.connected_once = true;
                    position.endpoint = Some(self.client.inner.endpoints.all()[slot].clone());
                    self.parser = Parser::default();
                    self.connection = Some((slot, response));
                    return Ok(());
                }
                Connect::Fatal(error) => {
                    self.done = true;
                    return Err(error);
                }
                Connect::Retry(error) => {
                    if !policy.retry || started.elapsed() + backoff >= timeout {
                        return Err(error);
                    }
                    tokio::time::sleep(crate::call::jitter(backoff)).await;
                    backoff = (backoff * 2).min(policy.backoff_max);
                }
            }
        }
    }

    async fn connect(&mut self) -> Connect {
        let (slot, base) = self.client.inner.endpoints.pick();
        let url = match crate::url_under(&base, &["v1", "watch"]) {
            Ok(url) => url,
            Err(error) => return Connect::Fatal(error),
        };
        let mut query = query_pairs(&[
            ("types", self.options.types.clone()),
            ("prefix", self.options.prefix.clone()),
            (
                "session_id",
                self.options.session_id.map(|id| id.to_string()),
            ),
        ]);
        match (&self.last, &self.options.start) {
            (Some((_, id)), _) => query.push(("after", id.clone())),
            (None, WatchStart::FromIndex(index)) => query.push(("from_index", index.to_string())),
            (None, WatchStart::After(id)) => query.push(("after", id.clone())),
            (None, WatchStart::Now) => {}
        }
        let request = self
            .client
            .authorize(self.client.inner.http.get(url).query(&query));
        let connect_timeout = self
            .client
            .inner
            .policy
            .attempt_timeout
            .unwrap_or(Duration::from_secs(10));
        let response = match tokio::time::timeout(connect_timeout, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                self.client.inner.endpoints.failed(slot);
                return Connect::Retry(Error::Transport(error));
            }
            Err(_) => {
                self.client.inner.endpoints.failed(slot);
                return Connect::Retry(Error::DeadlineExceeded);
            }
        };
        let status = response.status();
        if status.is_success() {
            return Connect::Open(slot, response);
        }
        let body = response.bytes().await.unwrap_or_default();
        let error = error::from_error_body(status.as_u16(), &body);
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            self.client.inner.endpoints.failed(slot);
            return Connect::Retry(error);
        }
        Connect::Fatal(error)
    }

    /// Reads the next chunk into the queue; on a dead connection, drops it (the next
    /// round reconnects elsewhere).
    async fn read(&mut self) {
        let Some((slot, response)) = self.connection.as_mut() else {
            return;
        };
        let slot = *slot;
        match tokio::time::timeout(self.options.idle_timeout, response.chunk()).await {
            Ok(Ok(Some(bytes))) => {
                self.parser.push(&bytes);
                while let Some(frame) = self.parser.next_frame() {
                    self.accept(frame);
                }
            }
            // The server ended the stream, the connection broke, or went silent.
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                self.connection = None;
                self.client.inner.endpoints.failed(slot);
            }
        }
    }

    /// Queues what `frame` means.
    fn accept(&mut self, frame: Frame) {
        let data: Value = serde_json::from_str(&frame.data).unwrap_or(Value::Null);
        let event_type = frame
            .event
            .clone()
            .or_else(|| data["type"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if event_type == "lagged" {
            self.connection = None;
            let last_event_id = data["last_event_id"].as_str().map(str::to_owned);
            self.queue.push_back(Err(Error::Lagged { last_event_id }));
            return;
        }
        let Some(id) = frame.id else {
            if self.options.cluster_frames && event_type == "cluster" {
                self.queue.push_back(Ok(Event {
                    id: None,
                    index: 0,
                    seq: 0,
                    event_type,
                    data,
                }));
            }
            return;
        };
        let Some(key) = parse_id(&id) else {
            return;
        };
        if self.last.as_ref().is_some_and(|(last, _)| key <= *last) {
            return; // already yielded (a resume never repeats, but be sure)
        }
        self.last = Some((key, id.clone()));
        self.position.lock().unwrap().last_event_id = Some(id.clone());
        self.queue.push_back(Ok(Event {
            id: Some(id),
            index: key.0,
            seq: key.1,
            event_type,
            data,
        }));
    }
}

/// `<index>.<seq>` as numbers.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (index, seq) = id.split_once('.')?;
    Some((index.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_order_by_index_then_seq() {
        assert_eq!(parse_id("12.3"), Some((12, 3)));
        assert!(parse_id("9.10").unwrap() < parse_id("10.0").unwrap());
        assert!(parse_id("10.2").unwrap() < parse_id("10.10").unwrap());
        assert_eq!(parse_id("x"), None);
    }
}
