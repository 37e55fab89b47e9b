//! The Conclave side: every workload over Conclave's HTTP API (docs/api.md) through
//! the client library (`conclave-client`). A bench client talks to one node, as a
//! client of that node only ([`Nodes`]): `Client::with_http(node, pool)`, the
//! library's client of one node that sends each call once — no retry, no generated
//! `request_id`, no leader discovery, no client-side timeout — so each operation is
//! one request to that node and every failure (a `503 no_leader` included) is
//! counted once, by kind, never retried away. All clients share one connection pool
//! that carries the bearer token; each holds its own HTTP/1.1 connection while its
//! request is in flight. Also finds the leader (`GET /v1/cluster`) for `--placement
//! leader` and for `failover`.
//!
//! Must not depend on the etcd side; the raw HTTP left in the bench (the watch
//! streams of `watch_fanout.rs`) uses [`http_client`] from here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use conclave_client::{
    Claimed, Client, Consistency, Error, LockAcquire, Release, SessionCreate, TaskComplete,
    TaskSubmit,
};
use serde_json::{json, Map, Value};

use crate::cli::{Placement, RunArgs, Workload};
use crate::driver::{closed_loop, Measured, Outcome, Progress, Tally};
use crate::report::Report;

/// How long a `GET /v1/cluster` (leader discovery, log indexes) may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The bench's connection pool; it sends `CONCLAVE_TOKEN` (set by `compare.sh`) as
/// its bearer token when the variable is set.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(token) = std::env::var("CONCLAVE_TOKEN") {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()).parse()?,
        );
    }
    Ok(reqwest::Client::builder()
        // Under the server's keep-alive idle timeout (`header_read_timeout_ms`, 30 s),
        // so a pooled connection is never reused just as the server closes it.
        .pool_idle_timeout(Duration::from_secs(10))
        .default_headers(headers)
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()?)
}

/// One `conclave_client::Client` per node URL, in the order given, all over one
/// pool: a client of one node, sending each call once (see the module docs).
#[derive(Clone)]
pub struct Nodes {
    urls: Vec<String>,
    clients: Vec<Client>,
}

impl Nodes {
    pub fn connect(urls: &[String]) -> anyhow::Result<Nodes> {
        anyhow::ensure!(!urls.is_empty(), "no Conclave URL given");
        let pool = http_client()?;
        let clients = urls
            .iter()
            .map(|url| {
                Client::with_http(url, pool.clone()).with_context(|| format!("a client of {url}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Nodes {
            urls: urls.to_vec(),
            clients,
        })
    }

    /// The client of bench client `index`: node `index` mod the node count.
    pub fn client(&self, index: usize) -> &Client {
        &self.clients[index % self.clients.len()]
    }

    /// The URL of node `index` mod the node count, as given.
    pub fn url(&self, index: usize) -> &str {
        &self.urls[index % self.urls.len()]
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }
}

/// Per-client state handed to every operation.
#[derive(Clone)]
struct Agent {
    api: Client,
    index: usize,
    session: u64,
    lock: Arc<str>,
}

pub async fn run(args: &RunArgs, progress: Arc<Progress>) -> anyhow::Result<Report> {
    let all = Nodes::connect(&args.urls)?;
    let targets = match args.placement {
        Placement::Spread => all.clone(),
        Placement::Leader => Nodes::connect(&[leader(&all).await?.url])?,
    };
    let (measured, extra) = match args.workload {
        Workload::Put | Workload::Get | Workload::StaleGet => {
            (key_value(args, &targets, progress).await?, Map::new())
        }
        Workload::TaskCycle => (task_cycle(args, &targets, progress).await?, Map::new()),
        Workload::TaskCycleNext => (task_cycle_next(args, &targets, progress).await?, Map::new()),
        Workload::Lock | Workload::ContendedLock => {
            (lock_cycle(args, &targets, progress).await?, Map::new())
        }
        Workload::Keepalive => keepalive(args, targets.client(0), progress).await?,
        Workload::Mixed => crate::mixed::run(args, &targets, progress).await?,
        Workload::Footprint => crate::footprint::run(args, &targets, &all, progress).await?,
        Workload::WatchFanout => crate::watch_fanout::run(args, &targets, &all, progress).await?,
        Workload::Failover => unreachable!("failover has its own runner"),
    };
    Ok(Report {
        system: "conclave",
        workload: args.workload.name(),
        clients: args.clients,
        placement: args.placement.name().into(),
        measured,
        extra,
    })
}

/// The current leader as seen by the first node that knows one.
pub struct Leader {
    pub id: u64,
    pub url: String,
}

/// `GET /v1/cluster` of `node`: its view of Raft and the membership.
pub async fn cluster_status(node: &Client) -> anyhow::Result<Value> {
    Ok(tokio::time::timeout(STATUS_TIMEOUT, node.cluster_info()).await??)
}

pub async fn leader(nodes: &Nodes) -> anyhow::Result<Leader> {
    for index in 0..nodes.len() {
        let Ok(status) = cluster_status(nodes.client(index)).await else {
            continue;
        };
        let Some(id) = status["leader_id"].as_u64() else {
            continue;
        };
        let members = status["members"].as_array().cloned().unwrap_or_default();
        let addr = members
            .iter()
            .find(|member| member["id"].as_u64() == Some(id))
            .and_then(|member| member["addr"].as_str())
            .with_context(|| format!("leader {id} is not among the members"))?;
        return Ok(Leader {
            id,
            url: format!("http://{addr}"),
        });
    }
    anyhow::bail!("no node in {:?} knows a leader", nodes.urls)
}

/// The kind a failed call is counted under, as the bench always named them: `http
/// <status>` for an answer that is not a success, `timeout` / `connect` /
/// `transport` when none came, `bad json` for a success it could not read.
pub fn kind(error: Error) -> String {
    match error {
        Error::Api(api) => format!("http {}", api.status),
        Error::Unexpected { status, .. } if !(200..300).contains(&status) => {
            format!("http {status}")
        }
        Error::Unexpected { .. } => "bad json".to_owned(),
        Error::Transport(error) => transport_error(&error),
        Error::DeadlineExceeded => "timeout".to_owned(),
        other => other.to_string(),
    }
}

pub fn transport_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "transport"
    };
    kind.to_owned()
}

fn clients(nodes: &Nodes, count: usize) -> Vec<Agent> {
    (0..count)
        .map(|index| Agent {
            api: nodes.client(index).clone(),
            index,
            session: 0,
            lock: "".into(),
        })
        .collect()
}

async fn key_value(
    args: &RunArgs,
    nodes: &Nodes,
    progress: Arc<Progress>,
) -> anyhow::Result<Measured> {
    let value = Arc::new(json!("x".repeat(64)));
    if args.workload != Workload::Put {
        for client in 0..args.clients {
            nodes
                .client(0)
                .kv_put(&format!("bench/{client}"), &value)
                .await
                .map_err(|error| anyhow::anyhow!("seeding key {client}: {}", kind(error)))?;
        }
    }
    let workload = args.workload;
    let duration = Duration::from_secs(args.duration);
    closed_loop(
        clients(nodes, args.clients),
        duration,
        progress,
        move |client, sequence| {
            let value = value.clone();
            async move {
                let (api, index) = (&client.api, client.index);
                let done = match workload {
                    Workload::Put => api
                        .kv_put(&format!("bench/{index}/{}", sequence % 1000), &value)
                        .await
                        .map(drop),
                    Workload::StaleGet => api
                        .kv_get(&format!("bench/{index}"), Consistency::Stale)
                        .await
                        .map(drop),
                    _ => api
                        .kv_get(&format!("bench/{index}"), Consistency::Linearizable)
                        .await
                        .map(drop),
                };
                done.map_err(kind)
            }
        },
    )
    .await
}

/// The task id and fencing token of a claim's answer; `claimed nothing` when its
/// wait ended without a task.
pub fn claimed_task(claimed: Result<Option<Claimed>, Error>) -> Result<(u64, u64), String> {
    let claimed = claimed.map_err(kind)?.ok_or("claimed nothing")?;
    let task_id = claimed.task["task_id"].as_u64().ok_or("claimed nothing")?;
    Ok((task_id, claimed.fencing_token))
}

/// A session's body: `name`, `capabilities`, `capacity` task slots, `ttl_ms`.
pub fn session(name: String, capabilities: &[&str], capacity: u32, ttl_ms: u64) -> SessionCreate {
    SessionCreate {
        name,
        capabilities: Some(capabilities.iter().map(|c| (*c).to_owned()).collect()),
        capacity: Some(capacity),
        ttl_ms: Some(ttl_ms),
        ..SessionCreate::default()
    }
}

/// A task's body: `kind`, `payload`, `required_capabilities`.
pub fn task(kind: &str, payload: Value, required: Vec<String>) -> TaskSubmit {
    TaskSubmit {
        kind: kind.to_owned(),
        payload: Some(payload),
        required_capabilities: Some(required),
        ..TaskSubmit::default()
    }
}

/// A lock acquire by `session_id`, waiting up to `wait_ms`.
pub fn acquire(session_id: u64, wait_ms: u64) -> LockAcquire {
    LockAcquire {
        session_id,
        wait_ms: Some(wait_ms),
        ..LockAcquire::default()
    }
}

/// A release of the grant `fencing_token` of `session_id`.
pub fn release(session_id: u64, fencing_token: u64) -> Release {
    Release {
        session_id,
        fencing_token,
        ..Release::default()
    }
}

/// A completion of the assignment `fencing_token` with `result`.
pub fn complete(fencing_token: u64, result: Value) -> TaskComplete {
    TaskComplete {
        fencing_token,
        result: Some(result),
        ..TaskComplete::default()
    }
}

/// Opens one session per client (`capacity` task slots).
async fn with_sessions(args: &RunArgs, nodes: &Nodes, capacity: u32) -> anyhow::Result<Vec<Agent>> {
    let mut opened = Vec::new();
    for mut client in clients(nodes, args.clients) {
        let body = session(
            format!("bench-{}", client.index),
            &["bench"],
            capacity,
            args.ttl_secs() * 1000,
        );
        let created = client.api.session_create(&body).await;
        client.session = created
            .map_err(|error| anyhow::anyhow!("opening a session: {}", kind(error)))?
            .session_id;
        opened.push(client);
    }
    Ok(opened)
}

/// Each client is an agent with its own session (capacity 1): it submits a task,
/// claims whatever is assigned to it, and completes it. One op = one full cycle.
async fn task_cycle(
    args: &RunArgs,
    nodes: &Nodes,
    progress: Arc<Progress>,
) -> anyhow::Result<Measured> {
    let agents = with_sessions(args, nodes, 1).await?;
    let submit = Arc::new(task("bench", json!("x"), vec!["bench".into()]));
    let duration = Duration::from_secs(args.duration);
    closed_loop(agents, duration, progress, move |agent, _| {
        let submit = submit.clone();
        async move {
            let api = &agent.api;
            api.task_submit(&submit).await.map_err(kind)?;
            let (task_id, token) = claimed_task(api.task_claim(agent.session, 1000).await)?;
            api.task_complete(task_id, &complete(token, json!(1)))
                .await
                .map(drop)
                .map_err(kind)
        }
    })
    .await
}

/// The task cycle in two requests: each agent (capacity 1) holds a claimed task; an
/// op submits one task and completes the held one with `claim_next` (no wait), which
/// assigns and claims the oldest queued task — usually the one just submitted — in
/// the completion's own command. An agent holding nothing (its first op, or after a
/// completion found nothing queued) claims instead of completing. One op = one
/// submit + one complete-and-claim: a cycle, as `task-cycle`'s.
async fn task_cycle_next(
    args: &RunArgs,
    nodes: &Nodes,
    progress: Arc<Progress>,
) -> anyhow::Result<Measured> {
    type Held = Arc<std::sync::Mutex<Option<(u64, u64)>>>;
    let agents: Vec<(Agent, Held)> = with_sessions(args, nodes, 1)
        .await?
        .into_iter()
        .map(|agent| (agent, Held::default()))
        .collect();
    let submit = Arc::new(task("bench", json!("x"), vec!["bench".into()]));
    let duration = Duration::from_secs(args.duration);
    closed_loop(agents, duration, progress, move |(agent, held), _| {
        let submit = submit.clone();
        async move {
            let api = &agent.api;
            api.task_submit(&submit).await.map_err(kind)?;
            let holding = held.lock().expect("held lock").take();
            let Some((task_id, token)) = holding else {
                let claimed = claimed_task(api.task_claim(agent.session, 1000).await)?;
                *held.lock().expect("held lock") = Some(claimed);
                return Ok(());
            };
            let done = api
                .task_complete_and_claim(task_id, &complete(token, json!(1)), 0)
                .await
                .map_err(kind)?;
            let next = done.next.map(|next| claimed_task(Ok(Some(next))));
            *held.lock().expect("held lock") = next.and_then(Result::ok);
            Ok(())
        }
    })
    .await
}

/// Each client has a session and loops acquire → release, on its own lock or (with
/// `contended-lock`) on one lock for all. One op = one acquire + release.
async fn lock_cycle(
    args: &RunArgs,
    nodes: &Nodes,
    progress: Arc<Progress>,
) -> anyhow::Result<Measured> {
    let contended = args.workload == Workload::ContendedLock;
    let mut lockers = with_sessions(args, nodes, 0).await?;
    for locker in &mut lockers {
        locker.lock = if contended {
            "bench-lock".into()
        } else {
            format!("bench-lock-{}", locker.index).into()
        };
    }
    let duration = Duration::from_secs(args.duration);
    closed_loop(lockers, duration, progress, |locker, _| async move {
        let (api, lock, session) = (&locker.api, &locker.lock, locker.session);
        let granted = api
            .lock_acquire(lock, &acquire(session, 5000))
            .await
            .map_err(kind)?;
        api.lock_release(lock, &release(session, granted.fencing_token))
            .await
            .map(drop)
            .map_err(kind)
    })
    .await
}

async fn last_log_index(node: &Client) -> anyhow::Result<u64> {
    cluster_status(node).await?["last_log_index"]
        .as_u64()
        .context("no last_log_index")
}

/// `--sessions` sessions, each renewed once a second by `--clients` senders for
/// `--duration` seconds; reports the Raft log entries per second that costs.
async fn keepalive(
    args: &RunArgs,
    node: &Client,
    progress: Arc<Progress>,
) -> anyhow::Result<(Measured, Map<String, Value>)> {
    // Created concurrently, with a TTL well above the time creating them all takes.
    let creators: Vec<_> = (0..args.clients)
        .map(|client| {
            let node = node.clone();
            let (clients, total, ttl_ms) = (args.clients, args.sessions, args.ttl_secs() * 1000);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in (client..total).step_by(clients) {
                    let body = SessionCreate {
                        name: format!("ka-{i}"),
                        capacity: Some(0),
                        ttl_ms: Some(ttl_ms),
                        ..SessionCreate::default()
                    };
                    if let Ok(created) = node.session_create(&body).await {
                        ids.push(created.session_id);
                    }
                }
                ids
            })
        })
        .collect();
    let mut sessions = Vec::with_capacity(args.sessions);
    for creator in creators {
        sessions.extend(creator.await?);
    }
    let sessions = Arc::new(sessions);
    let before = last_log_index(node).await?;
    let started = Instant::now();
    let senders: Vec<_> = (0..args.clients)
        .map(|client| {
            let (node, sessions) = (node.clone(), sessions.clone());
            let (clients, seconds, progress) = (args.clients, args.duration, progress.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for second in 0..seconds {
                    tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
                    for id in sessions.iter().skip(client).step_by(clients) {
                        let sent = Instant::now();
                        let outcome: Outcome =
                            node.session_keepalive(*id).await.map(drop).map_err(kind);
                        tally.record(sent, outcome, &progress);
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for sender in senders {
        total.merge(sender.await?);
    }
    let elapsed = started.elapsed();
    let entries = last_log_index(node).await? - before;
    let entries_per_sec = entries as f64 / elapsed.as_secs_f64();
    println!(
        "keepalive sessions={} log_entries={entries} entries/s={entries_per_sec:.1} over {:.1}s",
        args.sessions,
        elapsed.as_secs_f64()
    );
    let mut extra = Map::new();
    extra.insert("sessions".into(), json!(args.sessions));
    extra.insert("log_entries".into(), json!(entries));
    extra.insert("entries_per_sec".into(), json!(entries_per_sec));
    Ok((total.finish(elapsed), extra))
}
