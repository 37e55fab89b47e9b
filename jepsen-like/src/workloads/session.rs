//! Sessions, for every workload whose clients hold one (lock, semaphore, barrier,
//! tasks): creating a session ([`create`]), keeping it alive in the background,
//! ending it ([`end`]), and noticing it was lost ([`Session::mark_gone`], or a
//! keepalive answered `session_not_found`). Also the request plumbing this goes
//! through ([`Net`], [`Reply`], [`op`]) and the sequential session-holding
//! [`Client`] of the lock and semaphore workloads.
//!
//! One [`Session`] handle and one [`create`] serve every workload; what the
//! workloads need differently is a [`Spec`]:
//!
//! - [`Create::Plain`] (lock, semaphore): no `request_id`; each attempt is recorded
//!   as `session-create`. An `unknown` create retires the client's process id (a
//!   session maybe created holds nothing and expires on its own); every answer
//!   without a session is retried after [`BACKOFF`] until time is up.
//! - [`Create::Idempotent`] (barrier, tasks): a `request_id`, the same for every
//!   retry of one creation, so an indeterminate create never leaves a second live
//!   session behind; each attempt is recorded as `session`. A definite refusal gives
//!   up (`None`: the caller starts a new creation); anything else is retried after
//!   [`IDEMPOTENT_RETRY`].
//! - [`Keepalive::Confirmed`] (lock, semaphore: the lease checkers need evidence):
//!   every TTL/4 a keepalive to a random node and, [`CONFIRM_AFTER`] later (past the
//!   leader's 200 ms flush), a linearizable read of the session that confirms which
//!   renewals reached the log (see `checker::lease`). Both are recorded (process
//!   [`KEEPALIVE_PROCESS`] + the client's) and feed the session's
//!   [`SessionEvidence`]. The read goes on while keepalives are paused (it is the
//!   harness observing, and renews nothing).
//! - [`Keepalive::Rotating`] (barrier, tasks): every TTL/8, the next node in turn
//!   until one renews it (each node at most once per period), through a client with
//!   a [`ROTATING_TIMEOUT`] timeout; nothing recorded.
//!
//! Either keepalive stops for good on a `session_not_found` answer (the session is
//! then gone), once the session is marked gone or finished, or when the handle is
//! dropped (the session then expires on its own).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use super::{http_client, send, Context, Op, Sent, Status};
use crate::checker::lease::SessionEvidence;

/// TTL of the sessions of [`Client`] (the lock and semaphore workloads).
pub(crate) const TTL_MS: u64 = 2_000;
/// Pause after an `unavailable` answer (and after any failed [`Create::Plain`]).
pub(crate) const BACKOFF: Duration = Duration::from_millis(50);
/// Pause between attempts of a [`Create::Idempotent`] creation.
const IDEMPOTENT_RETRY: Duration = Duration::from_millis(100);
/// Delay between a keepalive and the session read that confirms it reached the log
/// (the leader flushes renewals every 200 ms).
const CONFIRM_AFTER: Duration = Duration::from_millis(250);
/// Per-request timeout of [`Keepalive::Rotating`] keepalives.
const ROTATING_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Process ids of recorded keepalive streams: this plus the client's process id.
const KEEPALIVE_PROCESS: u64 = 1_000_000;

// ----- requests --------------------------------------------------------------------

/// How to reach the cluster; shared by a client and its keepalive tasks.
#[derive(Clone)]
pub(crate) struct Net {
    urls: Arc<Vec<String>>,
    http: reqwest::Client,
    started: Instant,
}

/// One request's answer and timing.
pub(crate) struct Reply {
    pub sent: Sent,
    /// 0-based node index.
    pub node: usize,
    pub invoke_ns: u64,
    pub complete_ns: u64,
}

impl Reply {
    pub fn code(&self) -> Option<&str> {
        self.sent.error_code()
    }

    pub fn session_not_found(&self) -> bool {
        matches!(self.sent, Sent::Answer(404, _)) && self.code() == Some("session_not_found")
    }
}

impl Net {
    /// The run's nodes, through the harness's usual client ([`Context::http`]).
    pub fn new(context: &Context) -> Net {
        Net::with(context.urls.clone(), context.http(), context.started)
    }

    /// `urls` through `http`, timed from `started`.
    pub fn with(urls: Vec<String>, http: reqwest::Client, started: Instant) -> Net {
        Net {
            urls: Arc::new(urls),
            http,
            started,
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    pub fn nodes(&self) -> usize {
        self.urls.len()
    }

    pub async fn call(
        &self,
        node: usize,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.urls[node]));
        if let Some(body) = body {
            request = request.json(body);
        }
        let invoke_ns = self.now_ns();
        let sent = send(request).await;
        Reply {
            sent,
            node,
            invoke_ns,
            complete_ns: self.now_ns(),
        }
    }
}

/// The generic record of one request.
pub(crate) fn op(process: u64, f: &str, key: &str, value: Value, reply: &Reply) -> Op {
    let status = reply.sent.status();
    Op {
        process,
        f: f.into(),
        key: key.into(),
        value,
        status,
        invoke_ns: reply.invoke_ns,
        complete_ns: (status != Status::Unknown).then_some(reply.complete_ns),
        node: reply.node as u64 + 1,
    }
}

// ----- one session -----------------------------------------------------------------

/// What a workload needs of its sessions (see the module documentation).
pub(crate) struct Spec {
    /// The `POST /v1/sessions` body (name, `ttl_ms`, capacity, capabilities…),
    /// without `request_id`.
    pub body: Value,
    pub ttl_ms: u64,
    pub create: Create,
    pub keepalive: Keepalive,
}

/// How a session is created.
pub(crate) enum Create {
    /// No `request_id`; an `unknown` attempt retires the process id (by adding
    /// `processes`); `label` names the workload in complaints.
    Plain { label: &'static str, processes: u64 },
    /// Every attempt carries this `request_id`; a refusal gives up.
    Idempotent { request_id: String },
}

/// How a session is kept alive.
pub(crate) enum Keepalive {
    /// Keepalive then confirming read, recorded; its node choices are seeded with
    /// `seed ^ session id`.
    Confirmed { seed: u64 },
    /// The nodes in turn until one renews; nothing recorded.
    Rotating,
}

struct Shared {
    /// A simulated pause of the client: no keepalives.
    paused: AtomicBool,
    /// The keepalive task ends at its next wake-up.
    stopped: AtomicBool,
    /// Known (or assumed) ended.
    gone: AtomicBool,
    log: Mutex<Log>,
}

/// What a [`Keepalive::Confirmed`] task recorded.
struct Log {
    evidence: SessionEvidence,
    ops: Vec<Op>,
}

impl Shared {
    /// A request invoked at `at_ns` was answered `session_not_found`.
    fn lost(&self, at_ns: u64) {
        self.log.lock().unwrap().evidence.gone(at_ns);
        self.gone.store(true, Ordering::SeqCst);
    }
}

/// A live session and its keepalive task; dropping it stops the keepalives (the
/// session then expires on its own).
pub(crate) struct Session {
    pub id: u64,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Session {
    fn start(net: &Net, id: u64, spec: &Spec, process: u64, created_ns: u64) -> Session {
        let shared = Arc::new(Shared {
            paused: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            log: Mutex::new(Log {
                evidence: SessionEvidence::new(id, spec.ttl_ms, created_ns),
                ops: Vec::new(),
            }),
        });
        let task = match spec.keepalive {
            Keepalive::Confirmed { seed } => tokio::spawn(confirmed(
                net.clone(),
                shared.clone(),
                id,
                spec.ttl_ms,
                KEEPALIVE_PROCESS + process,
                seed ^ id,
            )),
            Keepalive::Rotating => {
                let net = Net {
                    http: http_client(ROTATING_TIMEOUT),
                    ..net.clone()
                };
                tokio::spawn(rotating(net, shared.clone(), id, spec.ttl_ms))
            }
        };
        Session {
            id,
            shared,
            task: Some(task),
        }
    }

    /// False once known (or assumed) ended: marked gone, or a keepalive or a
    /// confirming read was answered `session_not_found`.
    pub fn is_alive(&self) -> bool {
        !self.shared.gone.load(Ordering::SeqCst)
    }

    /// The session is gone or given up, from a request invoked at `at_ns` (answered
    /// `session_not_found`, or ending it): its keepalives stop.
    pub fn mark_gone(&self, at_ns: u64) {
        self.shared.lost(at_ns);
        self.stop();
    }

    /// Stops (or restarts) renewing it, to let it expire on purpose.
    pub fn pause_keepalive(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::SeqCst);
    }

    /// Stops the keepalives at their next wake-up.
    fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
    }

    /// Waits for the keepalive task and returns what was learned (nothing is
    /// recorded under [`Keepalive::Rotating`]).
    pub async fn finish(mut self) -> (SessionEvidence, Vec<Op>) {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let log = std::mem::replace(
            &mut *self.shared.log.lock().unwrap(),
            Log {
                evidence: SessionEvidence::new(self.id, 0, 0),
                ops: Vec::new(),
            },
        );
        (log.evidence, log.ops)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Creates a session as `spec` says, through random nodes, until one is created or
/// `keep_going` says stop; records each attempt in `ops` under `process` (which a
/// [`Create::Plain`] creation may retire).
pub(crate) async fn create(
    net: &Net,
    rng: &mut SmallRng,
    process: &mut u64,
    spec: &Spec,
    keep_going: impl Fn() -> bool,
    ops: &mut Vec<Op>,
) -> Option<Session> {
    let mut body = spec.body.clone();
    if let Create::Idempotent { request_id } = &spec.create {
        body["request_id"] = json!(request_id);
    }
    while keep_going() {
        let node = rng.gen_range(0..net.nodes());
        let reply = net
            .call(node, Method::POST, "/v1/sessions", Some(&body))
            .await;
        let id = match &reply.sent {
            Sent::Answer(200, answer) => answer["session_id"].as_u64(),
            _ => None,
        };
        ops.push(match &spec.create {
            Create::Plain { .. } => {
                let value = json!({ "session": id, "ttl_ms": spec.ttl_ms, "error": reply.code() });
                op(*process, "session-create", "sessions", value, &reply)
            }
            Create::Idempotent { request_id } => {
                let value = json!({ "request_id": request_id, "session_id": id });
                op(*process, "session", "sessions", value, &reply)
            }
        });
        if let Some(id) = id {
            return Some(Session::start(net, id, spec, *process, reply.invoke_ns));
        }
        match (&spec.create, reply.sent.status()) {
            // Maybe created: that session holds nothing and expires on its own.
            (Create::Plain { processes, .. }, Status::Unknown) => {
                *process += processes;
                tokio::time::sleep(BACKOFF).await;
            }
            (Create::Plain { .. }, Status::Unavailable) => tokio::time::sleep(BACKOFF).await,
            (Create::Plain { label, .. }, _) => {
                eprintln!("{label}: unexpected session create answer {:?}", reply.sent);
                tokio::time::sleep(BACKOFF).await;
            }
            (Create::Idempotent { .. }, Status::Fail) => {
                eprintln!("session create refused: {:?}", reply.sent);
                return None;
            }
            (Create::Idempotent { .. }, _) => tokio::time::sleep(IDEMPOTENT_RETRY).await,
        }
    }
    None
}

/// Ends session `id` through `node` (`DELETE /v1/sessions/{id}`); the caller records
/// it. If the end is not applied, the session expires within its TTL once its
/// keepalives stop.
pub(crate) async fn end(net: &Net, node: usize, id: u64) -> Reply {
    net.call(node, Method::DELETE, &format!("/v1/sessions/{id}"), None)
        .await
}

/// [`Keepalive::Confirmed`]: until stopped, a keepalive, then a confirming read.
async fn confirmed(net: Net, shared: Arc<Shared>, id: u64, ttl_ms: u64, process: u64, seed: u64) {
    let every = Duration::from_millis(ttl_ms / 4);
    let mut rng = SmallRng::seed_from_u64(seed);
    let key = format!("session-{id}");
    let stopped = || shared.stopped.load(Ordering::SeqCst);
    let paused = || shared.paused.load(Ordering::SeqCst);
    let gone = || shared.gone.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(every.saturating_sub(CONFIRM_AFTER)).await;
        if stopped() {
            return;
        }
        if !paused() {
            // One keepalive; `session_not_found` marks the session gone.
            let node = rng.gen_range(0..net.nodes());
            let path = format!("/v1/sessions/{id}/keepalive");
            let reply = net.call(node, Method::POST, &path, None).await;
            record(
                &shared,
                process,
                "keepalive",
                &key,
                id,
                &reply,
                |log, expires| log.evidence.renewals.push((reply.invoke_ns, expires)),
            );
        }
        if gone() {
            return;
        }
        tokio::time::sleep(CONFIRM_AFTER).await;
        if stopped() {
            return;
        }
        // The confirming read is the harness observing, not the client acting: it
        // goes on during a stall (it renews nothing), so the last renewal before
        // the stall gets confirmed.
        let node = rng.gen_range(0..net.nodes());
        let reply = net
            .call(node, Method::GET, &format!("/v1/sessions/{id}"), None)
            .await;
        record(
            &shared,
            process,
            "session-read",
            &key,
            id,
            &reply,
            |log, expires| log.evidence.read_expiry(expires),
        );
        if gone() {
            return;
        }
    }
}

/// Records a keepalive or a session read of [`confirmed`]: the operation, what a
/// `200` says of the expiry (through `learn`), and a `session_not_found`.
fn record(
    shared: &Shared,
    process: u64,
    f: &str,
    key: &str,
    id: u64,
    reply: &Reply,
    learn: impl FnOnce(&mut Log, u64),
) {
    let expires = match &reply.sent {
        Sent::Answer(200, body) => body["expires_at_ms"].as_u64(),
        _ => None,
    };
    {
        let mut log = shared.log.lock().unwrap();
        if let Some(expires) = expires {
            learn(&mut log, expires);
        }
        let value = json!({ "session": id, "expires_at_ms": expires });
        log.ops.push(op(process, f, key, value, reply));
    }
    if reply.session_not_found() {
        shared.lost(reply.invoke_ns);
    }
}

/// [`Keepalive::Rotating`]: every `ttl_ms / 8`, the next nodes in turn until one
/// renews the session (each at most once per period).
async fn rotating(net: Net, shared: Arc<Shared>, id: u64, ttl_ms: u64) {
    let period = Duration::from_millis(ttl_ms / 8);
    let path = format!("/v1/sessions/{id}/keepalive");
    let mut node = id as usize;
    loop {
        tokio::time::sleep(period).await;
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        if shared.paused.load(Ordering::SeqCst) {
            continue;
        }
        for _ in 0..net.nodes() {
            node = (node + 1) % net.nodes();
            let reply = net.call(node, Method::POST, &path, None).await;
            match reply.sent {
                Sent::Answer(200, _) => break,
                _ if reply.code() == Some("session_not_found") => {
                    shared.lost(reply.invoke_ns);
                    return;
                }
                _ => continue,
            }
        }
    }
}

// ----- the lock and semaphore client -----------------------------------------------

/// What a [`Client`] leaves behind: its operations and what it learned of its
/// sessions.
pub(crate) struct ClientEnd {
    pub ops: Vec<Op>,
    pub sessions: Vec<SessionEvidence>,
}

/// One sequential client of the lock or semaphore workload, with a session
/// ([`Create::Plain`], [`Keepalive::Confirmed`], TTL [`TTL_MS`], `capacity: 0`)
/// recreated when gone.
pub(crate) struct Client {
    pub net: Net,
    pub process: u64,
    processes: u64,
    pub rng: SmallRng,
    pub ops: Vec<Op>,
    sessions: Vec<Session>,
    label: &'static str,
    pub until: Instant,
    seed: u64,
}

impl Client {
    pub fn new(context: &Context, index: usize, label: &'static str) -> Client {
        let seed = context
            .seed
            .wrapping_add(index as u64 * 7919)
            .wrapping_mul(31)
            ^ label.len() as u64;
        Client {
            net: Net::new(context),
            process: index as u64,
            processes: context.processes as u64,
            rng: SmallRng::seed_from_u64(seed),
            ops: Vec::new(),
            sessions: Vec::new(),
            label,
            until: context.until,
            seed,
        }
    }

    pub fn node(&mut self) -> usize {
        self.rng.gen_range(0..self.net.nodes())
    }

    pub fn now_ns(&self) -> u64 {
        self.net.now_ns()
    }

    /// Sends one request to a random node.
    pub async fn call(&mut self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let node = self.node();
        self.net.call(node, method, path, body).await
    }

    pub fn record(&mut self, f: &str, key: &str, value: Value, reply: &Reply) {
        self.ops.push(op(self.process, f, key, value, reply));
    }

    /// Retires the process id after an indeterminate operation (Jepsen's discipline).
    pub fn retire(&mut self) {
        self.process += self.processes;
    }

    /// Pauses (or resumes) the current session's keepalives.
    pub fn pause_keepalives(&self, paused: bool) {
        if let Some(session) = self.sessions.last() {
            session.pause_keepalive(paused);
        }
    }

    /// The current session was answered `session_not_found` by a request invoked at
    /// `at_ns`.
    pub fn session_gone(&mut self, at_ns: u64) {
        if let Some(session) = self.sessions.last() {
            session.mark_gone(at_ns);
        }
    }

    /// A live session, created if needed; `None` once the run's time is up.
    pub async fn session(&mut self) -> Option<u64> {
        if let Some(session) = self.sessions.last().filter(|s| s.is_alive()) {
            return Some(session.id);
        }
        let name = format!("jepsen-{}-p{}", self.label, self.process);
        let spec = Spec {
            body: json!({ "name": name, "ttl_ms": TTL_MS, "capacity": 0 }),
            ttl_ms: TTL_MS,
            create: Create::Plain {
                label: self.label,
                processes: self.processes,
            },
            keepalive: Keepalive::Confirmed { seed: self.seed },
        };
        let until = self.until;
        let session = create(
            &self.net,
            &mut self.rng,
            &mut self.process,
            &spec,
            || Instant::now() < until,
            &mut self.ops,
        )
        .await?;
        let id = session.id;
        self.sessions.push(session);
        Some(id)
    }

    /// Gives the current session up: stops its keepalives and ends it (best effort;
    /// if the end is not applied, it expires within its TTL).
    pub async fn abandon(&mut self) {
        let Some(session) = self.sessions.last().filter(|s| s.is_alive()) else {
            return;
        };
        let id = session.id;
        session.stop();
        let node = self.node();
        let reply = end(&self.net, node, id).await;
        self.record(
            "session-end",
            &format!("session-{id}"),
            json!({ "session": id }),
            &reply,
        );
        // Whether or not the end applies, holds counted before it are over by now.
        if let Some(session) = self.sessions.last() {
            session.mark_gone(reply.invoke_ns);
        }
    }

    /// Ends the current session and collects every session's record.
    pub async fn finish(mut self) -> ClientEnd {
        self.abandon().await;
        let mut ops = std::mem::take(&mut self.ops);
        let mut sessions = Vec::new();
        for session in self.sessions {
            let (evidence, session_ops) = session.finish().await;
            ops.extend(session_ops);
            sessions.push(evidence);
        }
        ClientEnd { ops, sessions }
    }
}
