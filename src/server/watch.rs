//! `GET /v1/watch`: the event stream as Server-Sent Events.
//!
//! Served by the node that receives it, from its own applied state (followers
//! included), out of the watch hub (`crate::watch`): it replays the retained
//! history from the requested start, then goes live, with no gap and no duplicate
//! across the switch (both are reads of the same ring by position). The start is
//! `Last-Event-ID` (a browser's reconnect), `?after=<index>.<seq>` (the same, for
//! other clients), `?from_index=N` (the first event of command N), or now. This
//! file owns the query and its filters (`prefix`, `types`, `session_id`, and what
//! the caller's token may read), the SSE framing, keep-alive comments, the
//! node-local `cluster` events, the `lagged` farewell and the per-node watcher
//! bound. Like every handler file it reaches the replica only through `AppState`.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::extract::QueryParams;
use super::AppState;
use crate::auth::{Caller, Grants, Kind};
use crate::limits::{WATCH_BYTES_PER_WRITE, WATCH_EVENTS_PER_WRITE};
use crate::replica::cluster_view::ClusterView;
use crate::sm::events::{EventBody, Readable};
use crate::watch::{Cursor, Entry, EventId, Hub, Read, Start};

/// The event types a watch can ask for, by family (`kv` is every `kv.*`).
pub const FAMILIES: [&str; 10] = [
    "kv",
    "session",
    "task",
    "lock",
    "semaphore",
    "barrier",
    "election",
    "proposal",
    "2pc",
    "membership",
];

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// Only events whose key starts with this: a KV key, a lock, semaphore,
    /// barrier or election name, or a task's kind. Events without a key
    /// (sessions, proposals, 2PC, membership) are left out when it is set.
    prefix: Option<String>,
    /// Comma-separated event types or families (`kv`, `lock.lost`, `cluster`).
    types: Option<String>,
    /// Only events concerning this session (an agent's own stream).
    session_id: Option<u64>,
    /// Start with the first event of this command index (inclusive).
    from_index: Option<u64>,
    /// Start after this event id (`<index>.<seq>`), as `Last-Event-ID` does.
    after: Option<String>,
    /// End the stream after this long (at most `max_wait_ms`), as Kubernetes'
    /// `timeoutSeconds`; without it the stream lasts until the client leaves.
    timeout_ms: Option<u64>,
}

/// What a watcher wants to see.
struct Filter {
    prefix: String,
    /// `None`: every type.
    types: Option<BTreeSet<String>>,
    session_id: Option<u64>,
    grants: Grants,
}

impl Filter {
    fn wants_type(&self, name: &str) -> bool {
        let Some(types) = &self.types else {
            return true;
        };
        let family = name.split('.').next().unwrap_or(name);
        types.contains(name) || types.contains(family)
    }

    fn wants(&self, body: &EventBody) -> bool {
        if !self.wants_type(body.type_name()) {
            return false;
        }
        if self.session_id.is_some() && body.session() != self.session_id {
            return false;
        }
        if !self.prefix.is_empty() && !body.key().is_some_and(|k| k.starts_with(&self.prefix)) {
            return false;
        }
        self.grants.reads_everything()
            || match body.readable() {
                Readable::Kv(name) => self.grants.may_read(Kind::Kv, name),
                Readable::Locks(name) => self.grants.may_read(Kind::Locks, name),
                Readable::Semaphores(name) => self.grants.may_read(Kind::Semaphores, name),
                Readable::Barriers(name) => self.grants.may_read(Kind::Barriers, name),
                Readable::Elections(name) => self.grants.may_read(Kind::Elections, name),
                // The route's own need (any read) covers these, as their GETs.
                Readable::Any => true,
            }
    }
}

/// Parses an event id `<index>.<seq>`.
pub fn parse_event_id(text: &str) -> Option<EventId> {
    let (index, seq) = text.trim().split_once('.')?;
    Some((index.parse().ok()?, seq.parse().ok()?))
}

fn parse_types(text: &str) -> Result<BTreeSet<String>, ApiError> {
    let mut types = BTreeSet::new();
    for name in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let family = name.split('.').next().unwrap_or(name);
        let known = name == "cluster"
            || (FAMILIES.contains(&family) && (family == name || known_type(name)));
        if !known {
            return Err(ApiError::invalid(
                ErrorCode::InvalidEventType,
                format!(
                    "unknown event type {name:?}: a family ({}, cluster) or a type of one (docs/watch.md)",
                    FAMILIES.join(", ")
                ),
            ));
        }
        types.insert(name.to_owned());
    }
    Ok(types)
}

/// Whether `name` is an event type (for checking `?types=`).
fn known_type(name: &str) -> bool {
    crate::sm::events::TYPE_NAMES.contains(&name)
}

/// Where the request asks to start.
fn start_of(query: &WatchQuery, headers: &HeaderMap) -> Result<Start, ApiError> {
    let bad_id = |text: &str| {
        ApiError::invalid(
            ErrorCode::InvalidEventId,
            format!("event id {text:?} is not <index>.<seq> (e.g. 42.0)"),
        )
    };
    if let Some(value) = headers.get("last-event-id") {
        let text = value.to_str().map_err(|_| bad_id("(not text)"))?;
        return parse_event_id(text)
            .map(Start::After)
            .ok_or_else(|| bad_id(text));
    }
    match (&query.after, query.from_index) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            ErrorCode::InvalidQuery,
            "give after or from_index, not both",
        )),
        (Some(after), None) => parse_event_id(after)
            .map(Start::After)
            .ok_or_else(|| bad_id(after)),
        (None, Some(index)) => Ok(Start::FromIndex(index)),
        (None, None) => Ok(Start::Now),
    }
}

/// Counts this node's watchers; the slot is given back when the stream is dropped
/// (the client went away, or the stream ended).
struct Slot(Hub);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.stats.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn watch(
    State(app): State<AppState>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<WatchQuery>,
    caller: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    let grants = caller.map_or_else(Grants::open, |axum::Extension(caller)| caller.grants);
    let types = query.types.as_deref().map(parse_types).transpose()?;
    let prefix = query.prefix.clone().unwrap_or_default();
    if prefix.len() > app.limits.max_key_bytes {
        return Err(ApiError::invalid(
            ErrorCode::KeyTooLong,
            format!("prefix is longer than {} bytes", app.limits.max_key_bytes),
        ));
    }
    let start = start_of(&query, &headers)?;
    let ends_at = match query.timeout_ms {
        Some(ms) if ms > app.limits.max_wait_ms => {
            return Err(ApiError::invalid(
                ErrorCode::InvalidWait,
                format!(
                    "timeout_ms is at most {} (max_wait_ms)",
                    app.limits.max_wait_ms
                ),
            ))
        }
        Some(ms) => Some(tokio::time::Instant::now() + Duration::from_millis(ms)),
        None => None,
    };
    let hub = app.replica.hub().clone();
    let watchers = hub.stats.watchers.fetch_add(1, Ordering::Relaxed) + 1;
    let slot = Slot(hub.clone());
    if watchers > app.limits.max_watchers as u64 {
        return Err(ApiError::TooManyWatchers {
            limit: app.limits.max_watchers,
        });
    }
    let cursor = hub.cursor(start).map_err(|c| ApiError::Compacted {
        oldest_index: c.oldest_index,
    })?;
    let filter = Filter {
        prefix,
        types,
        session_id: query.session_id,
        grants,
    };
    let mut stream = Watcher {
        heads: hub.subscribe(),
        hub,
        cursor,
        views: app.replica.cluster_view(),
        // A watch without `cluster` frames need not wake for the view at all.
        views_alive: filter.wants_type("cluster"),
        send_cluster: filter.wants_type("cluster"),
        filter,
        keepalive: Duration::from_millis(app.limits.watch_keepalive_ms),
        opening: true,
        done: false,
        ends_at,
        _slot: slot,
    };
    stream.views.mark_changed();
    let body = futures_util::stream::unfold(stream, |mut watcher| async move {
        let chunk = watcher.next_chunk().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(chunk), watcher))
    });
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // For proxies that buffer (nginx): stream each event as it comes.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One watch's state between chunks.
struct Watcher {
    hub: Hub,
    heads: tokio::sync::watch::Receiver<u64>,
    cursor: Cursor,
    views: tokio::sync::watch::Receiver<Arc<ClusterView>>,
    views_alive: bool,
    send_cluster: bool,
    filter: Filter,
    keepalive: Duration,
    opening: bool,
    done: bool,
    /// `?timeout_ms`: when the stream ends by itself.
    ends_at: Option<tokio::time::Instant>,
    _slot: Slot,
}

impl Watcher {
    /// The next bytes to send, waiting for them if need be; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut out = BytesMut::new();
        if self.opening {
            self.opening = false;
            // Reconnect after 1 s (EventSource); say where the stream starts.
            let (index, seq) = self.cursor.from;
            out.put_slice(format!("retry: 1000\n: watching from {index}.{seq}\n\n").as_bytes());
        }
        loop {
            let over = self
                .ends_at
                .is_some_and(|at| at <= tokio::time::Instant::now());
            if self.hub.is_closed() || over {
                self.done = true;
                return (!out.is_empty()).then(|| out.freeze());
            }
            if self.views.has_changed().unwrap_or(false) {
                let view = self.views.borrow_and_update().clone();
                if self.send_cluster {
                    cluster_frame(&view, &mut out);
                }
            }
            self.heads.borrow_and_update();
            let wanted = |entry: &Entry| self.filter.wants(&entry.body);
            let read = self.hub.read(
                self.cursor,
                WATCH_EVENTS_PER_WRITE,
                &wanted,
                WATCH_BYTES_PER_WRITE,
            );
            match read {
                Read::Lagged => {
                    self.done = true;
                    self.hub.stats.lagged.fetch_add(1, Ordering::Relaxed);
                    lagged_frame(self.cursor, &mut out);
                    return Some(out.freeze());
                }
                Read::Events(entries, next, more) => {
                    self.cursor = next;
                    let sent = entries.len() as u64;
                    for entry in &entries {
                        out.put_slice(frame(entry));
                    }
                    self.hub
                        .stats
                        .events_sent
                        .fetch_add(sent, Ordering::Relaxed);
                    if !out.is_empty() {
                        return Some(out.freeze());
                    }
                    if more {
                        continue;
                    }
                }
            }
            tokio::select! {
                changed = self.heads.changed() => {
                    if changed.is_err() {
                        self.done = true;
                        return None;
                    }
                }
                changed = self.views.changed(), if self.views_alive => {
                    match changed {
                        Ok(()) => self.views.mark_changed(),
                        Err(_) => self.views_alive = false,
                    }
                }
                () = tokio::time::sleep(self.keepalive) => {
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
                () = sleep_until(self.ends_at) => {}
            }
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The SSE frame of an event, rendered once and shared by every watcher.
fn frame(entry: &Entry) -> &[u8] {
    entry.frame.get_or_init(|| {
        let id = format!("{}.{}", entry.index, entry.seq);
        let mut data = serde_json::to_value(&entry.body).unwrap_or_else(|_| json!({}));
        if let Some(object) = data.as_object_mut() {
            object.insert("id".into(), json!(id));
            object.insert("index".into(), json!(entry.index));
            object.insert("seq".into(), json!(entry.seq));
        }
        let text = format!(
            "id: {id}\nevent: {}\ndata: {}\n\n",
            entry.body.type_name(),
            data
        );
        Bytes::from(text)
    })
}

/// A node-local `cluster` event: no `id:` (it is not in the log, so a resume
/// neither needs nor may name it).
fn cluster_frame(view: &ClusterView, out: &mut BytesMut) {
    let mut data = serde_json::to_value(view).unwrap_or_else(|_| json!({}));
    if let Some(object) = data.as_object_mut() {
        object.insert("type".into(), json!("cluster"));
        object.insert("local".into(), json!(true));
    }
    out.put_slice(format!("event: cluster\ndata: {data}\n\n").as_bytes());
}

/// The farewell of a watcher that fell behind: where to resume. `from_index` is
/// safe (it may repeat events of that command, whose ids are at most
/// `last_event_id`); `after` = `last_event_id` is exact.
fn lagged_frame(cursor: Cursor, out: &mut BytesMut) {
    let (index, seq) = cursor.from;
    let last = (seq > 0).then(|| format!("{index}.{}", seq - 1));
    let data = json!({
        "type": "lagged",
        "from_index": index,
        "last_event_id": last,
    });
    out.put_slice(format!("event: lagged\ndata: {data}\n\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_parse_and_bad_ones_do_not() {
        assert_eq!(parse_event_id("42.3"), Some((42, 3)));
        assert_eq!(parse_event_id(" 7.0 "), Some((7, 0)));
        for bad in ["", "42", "a.b", "1.-1", "1.2.3"] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn types_are_families_exact_types_or_cluster_and_others_are_refused() {
        let types = parse_types("kv, lock.lost,cluster").unwrap();
        assert_eq!(types.len(), 3);
        assert!(parse_types("lock.stolen").is_err());
        assert!(parse_types("nothing").is_err());
        let filter = Filter {
            prefix: String::new(),
            types: Some(types),
            session_id: None,
            grants: Grants::open(),
        };
        assert!(filter.wants_type("kv.put"));
        assert!(filter.wants_type("lock.lost"));
        assert!(!filter.wants_type("lock.granted"));
        assert!(filter.wants_type("cluster"));
    }

    #[test]
    fn a_watch_shows_only_what_its_token_may_read() {
        let grants = Grants::new(&["agent:kv:jobs/".to_owned()]).unwrap();
        let filter = Filter {
            prefix: String::new(),
            types: None,
            session_id: None,
            grants,
        };
        let put = |key: &str| EventBody::KvDeleted {
            key: key.into(),
            previous_version: 1,
        };
        assert!(filter.wants(&put("jobs/1")));
        assert!(!filter.wants(&put("secrets/1")));
        let lock = EventBody::LockReleased {
            name: "jobs/1".into(),
            session_id: 1,
            fencing_token: 2,
        };
        assert!(!filter.wants(&lock), "agent:kv does not read locks");
        // Sessions are readable with any scope, as GET /v1/sessions is.
        assert!(filter.wants(&EventBody::SessionEnded { session_id: 1 }));
    }

    #[test]
    fn prefix_and_session_filters_apply_to_what_events_name() {
        let filter = Filter {
            prefix: "a/".into(),
            types: None,
            session_id: Some(5),
            grants: Grants::open(),
        };
        let granted = |name: &str, session_id| EventBody::LockGranted {
            name: name.into(),
            session_id,
            fencing_token: 1,
            mode: "exclusive",
        };
        assert!(filter.wants(&granted("a/x", 5)));
        assert!(!filter.wants(&granted("b/x", 5)));
        assert!(!filter.wants(&granted("a/x", 6)));
        assert!(!filter.wants(&EventBody::SessionEnded { session_id: 5 }));
    }
}
