//! What the decision workloads (`twophase`, `proposals`) share: an idempotent write
//! retried with its `request_id` until it gets a definite answer, and the
//! observation log every client and reader appends to.
//!
//! **Retry discipline.** Every write carries a `request_id`. An `unavailable`
//! answer (503, 429, refused connection) never reached the state machine and an
//! `unknown` one (504, timeout, lost connection) may have: both are retried with the
//! same id on the next node for up to [`RETRY_WINDOW`]. The first definite answer is
//! the write's outcome (the original's, if it was applied); without one the write is
//! `unknown` (maybe applied) and checkers treat it so.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use super::session::{op, Net, Reply, BACKOFF};
use super::{Op, Status};

/// How long the final read of one record may take in all.
const FINAL_READ_FOR: Duration = Duration::from_secs(30);

/// How long a write is retried in place without a definite answer.
pub const RETRY_WINDOW: Duration = Duration::from_secs(8);

/// A write's outcome after in-place retries: the last reply and when it was first
/// invoked.
pub(crate) struct Written {
    pub reply: Reply,
    pub invoke_ns: u64,
    pub status: Status,
}

/// Sends `body` (which carries a `request_id`) to `path` starting at node `first`,
/// retrying on the next node until a definite answer or [`RETRY_WINDOW`] passes.
/// Every attempt is recorded in `ops` as `f`.
pub(crate) async fn write(
    net: &Net,
    first: usize,
    path: &str,
    body: &Value,
    record: (&mut Vec<Op>, u64, &str, &str),
) -> Written {
    let (ops, process, f, key) = record;
    let deadline = Instant::now() + RETRY_WINDOW;
    let mut node = first % net.nodes();
    let mut invoke_ns = None;
    loop {
        let reply = net.call(node, Method::POST, path, Some(body)).await;
        invoke_ns.get_or_insert(reply.invoke_ns);
        let mut value = body.clone();
        value["answer"] = reply.sent.body().clone();
        ops.push(op(process, f, key, value, &reply));
        let status = reply.sent.status();
        let definite = matches!(status, Status::Ok | Status::Fail);
        if definite || Instant::now() >= deadline {
            let status = if definite { status } else { Status::Unknown };
            return Written {
                reply,
                invoke_ns: invoke_ns.unwrap_or(0),
                status,
            };
        }
        node = (node + 1) % net.nodes();
        tokio::time::sleep(BACKOFF).await;
    }
}

/// One observation of a record's state by a read (or a write's answer): when it was
/// invoked and completed, and what it showed.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub id: u64,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    /// The view (a read) or answer (a write) as the server sent it.
    pub view: Value,
    /// A linearizable read (not a write's answer).
    pub read: bool,
}

/// Observations shared by a workload's clients.
#[derive(Clone, Default)]
pub(crate) struct Observations {
    all: Arc<Mutex<Vec<Seen>>>,
}

impl Observations {
    pub fn push(&self, seen: Seen) {
        self.all.lock().unwrap().push(seen);
    }

    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.all.lock().unwrap())
    }
}

/// Reads `path` (a record's view) on `node` and records what it showed, if the read
/// was answered 200.
pub(crate) async fn observe(
    net: &Net,
    node: usize,
    id: u64,
    path: &str,
    seen: &Observations,
) -> Option<Value> {
    let reply = net.call(node % net.nodes(), Method::GET, path, None).await;
    match &reply.sent {
        super::Sent::Answer(200, view) => {
            seen.push(Seen {
                id,
                invoke_ns: reply.invoke_ns,
                complete_ns: reply.complete_ns,
                view: view.clone(),
                read: true,
            });
            Some(view.clone())
        }
        _ => None,
    }
}

/// After healing: reads each of `ids` (`path(id)`, a read with `wait_ms`) on the
/// nodes in turn until its `state` is no longer `unsettled`, for at most
/// [`FINAL_READ_FOR`] each; returns the settled views (a record that never settled
/// is missing, which the workloads' `decided` checks report).
pub(crate) async fn settle(
    net: &Net,
    ids: &[u64],
    path: impl Fn(u64) -> String,
    unsettled: &str,
    seen: &Observations,
) -> std::collections::BTreeMap<u64, Value> {
    let mut settled = std::collections::BTreeMap::new();
    for (n, &id) in ids.iter().enumerate() {
        let deadline = Instant::now() + FINAL_READ_FOR;
        while Instant::now() < deadline {
            if let Some(view) = observe(net, n, id, &path(id), seen).await {
                if view["state"] != unsettled {
                    settled.insert(id, view);
                    break;
                }
            }
            tokio::time::sleep(BACKOFF).await;
        }
    }
    settled
}
