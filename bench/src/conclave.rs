//! The Conclave side: every workload over Conclave's HTTP API (docs/api.md) with
//! reqwest, each client holding its own HTTP/1.1 connection. Also finds the leader
//! (`GET /v1/cluster`) for `--placement leader` and for `failover`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Map, Value};

use crate::cli::{Placement, RunArgs, Workload};
use crate::driver::{closed_loop, Measured, Outcome, Progress, Tally};
use crate::report::Report;

/// The bench's HTTP client; it sends `CONCLAVE_TOKEN` (set by `compare.sh`) as
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
        .pool_idle_timeout(std::time::Duration::from_secs(10))
        .default_headers(headers)
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()?)
}

/// Per-client state handed to every operation.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: Arc<str>,
    index: usize,
    session: u64,
    lock: Arc<str>,
}

pub async fn run(args: &RunArgs, progress: Arc<Progress>) -> anyhow::Result<Report> {
    let http = http_client()?;
    let urls = targets(args, &http).await?;
    let (measured, extra) = match args.workload {
        Workload::Put | Workload::Get | Workload::StaleGet => {
            (key_value(args, &http, &urls, progress).await?, Map::new())
        }
        Workload::TaskCycle => (task_cycle(args, &http, &urls, progress).await?, Map::new()),
        Workload::Lock | Workload::ContendedLock => {
            (lock_cycle(args, &http, &urls, progress).await?, Map::new())
        }
        Workload::Keepalive => keepalive(args, &http, &urls[0], progress).await?,
        Workload::Mixed => crate::mixed::run(args, &http, &urls, progress).await?,
        Workload::Footprint => crate::footprint::run(args, &http, &urls, progress).await?,
        Workload::WatchFanout => crate::watch_fanout::run(args, &http, &urls, progress).await?,
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

/// The URLs clients are spread over: all of them, or only the leader's.
async fn targets(args: &RunArgs, http: &reqwest::Client) -> anyhow::Result<Vec<String>> {
    match args.placement {
        Placement::Spread => Ok(args.urls.clone()),
        Placement::Leader => Ok(vec![leader(http, &args.urls).await?.url]),
    }
}

/// The current leader as seen by the first node that knows one.
pub struct Leader {
    pub id: u64,
    pub url: String,
}

pub async fn cluster_status(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{url}/v1/cluster"))
        .timeout(Duration::from_secs(2))
        .send()
        .await?
        .json()
        .await?)
}

pub async fn leader(http: &reqwest::Client, urls: &[String]) -> anyhow::Result<Leader> {
    for url in urls {
        let Ok(status) = cluster_status(http, url).await else {
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
    anyhow::bail!("no node in {urls:?} knows a leader")
}

fn clients(http: &reqwest::Client, urls: &[String], count: usize) -> Vec<Client> {
    (0..count)
        .map(|index| Client {
            http: http.clone(),
            url: urls[index % urls.len()].as_str().into(),
            index,
            session: 0,
            lock: "".into(),
        })
        .collect()
}

async fn key_value(
    args: &RunArgs,
    http: &reqwest::Client,
    urls: &[String],
    progress: Arc<Progress>,
) -> anyhow::Result<Measured> {
    let value: Arc<str> = json!({ "value": "x".repeat(64) }).to_string().into();
    if args.workload != Workload::Put {
        for client in 0..args.clients {
            let seed = http
                .put(format!("{}/v1/kv/bench/{client}", urls[0]))
                .body(value.to_string());
            succeeded(seed)
                .await
                .map_err(|kind| anyhow::anyhow!("seeding key {client}: {kind}"))?;
        }
    }
    let workload = args.workload;
    let duration = Duration::from_secs(args.duration);
    closed_loop(
        clients(http, urls, args.clients),
        duration,
        progress,
        move |client, sequence| {
            let value = value.clone();
            async move {
                let (url, index) = (&client.url, client.index);
                let request = match workload {
                    Workload::Put => client
                        .http
                        .put(format!("{url}/v1/kv/bench/{index}/{}", sequence % 1000))
                        .body(value.to_string()),
                    Workload::StaleGet => client
                        .http
                        .get(format!("{url}/v1/kv/bench/{index}?consistency=stale")),
                    _ => client.http.get(format!("{url}/v1/kv/bench/{index}")),
                };
                let response = succeeded(request).await?;
                response.bytes().await.map(drop).map_err(transport_error)
            }
        },
    )
    .await
}

fn transport_error(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "transport"
    };
    kind.to_owned()
}

/// Sends the request; a non-2xx answer is a failure of kind `http <status>`.
pub async fn succeeded(request: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
    let response = request.send().await.map_err(transport_error)?;
    match response.status() {
        status if status.is_success() => Ok(response),
        status => Err(format!("http {}", status.as_u16())),
    }
}

/// POSTs `body`; the answer's JSON (`Null` for `204`), or the failure's kind.
pub async fn json_post(http: &reqwest::Client, url: String, body: Value) -> Result<Value, String> {
    let response = succeeded(http.post(url).json(&body)).await?;
    if response.status() == reqwest::StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    response.json().await.map_err(|_| "bad json".to_owned())
}

/// The task id and fencing token of a claim's answer; `claimed nothing` when its
/// wait ended without a task.
pub fn claimed_task(claimed: &Value) -> Result<(u64, u64), String> {
    let task_id = claimed["task"]["task_id"]
        .as_u64()
        .ok_or("claimed nothing")?;
    let token = claimed["fencing_token"]
        .as_u64()
        .ok_or("no fencing token")?;
    Ok((task_id, token))
}

/// Opens one session per client (`capacity` task slots).
async fn with_sessions(
    args: &RunArgs,
    http: &reqwest::Client,
    urls: &[String],
    capacity: u64,
) -> anyhow::Result<Vec<Client>> {
    let mut opened = Vec::new();
    for mut client in clients(http, urls, args.clients) {
        let body = json!({ "name": format!("bench-{}", client.index), "capabilities": ["bench"],
            "capacity": capacity, "ttl_ms": args.ttl_secs() * 1000 });
        let session = json_post(http, format!("{}/v1/sessions", client.url), body)
            .await
            .map_err(|kind| anyhow::anyhow!("opening a session: {kind}"))?;
        client.session = session["session_id"].as_u64().context("session_id")?;
        opened.push(client);
    }
    Ok(opened)
}

/// Each client is an agent with its own session (capacity 1): it submits a task,
/// claims whatever is assigned to it, and completes it. One op = one full cycle.
async fn task_cycle(
    args: &RunArgs,
    http: &reqwest::Client,
    urls: &[String],
    progress: Arc<Progress>,
) -> anyhow::Result<Measured> {
    let agents = with_sessions(args, http, urls, 1).await?;
    let duration = Duration::from_secs(args.duration);
    closed_loop(agents, duration, progress, |agent, _| async move {
        let (http, url) = (&agent.http, &agent.url);
        let task = json!({ "kind": "bench", "payload": "x", "required_capabilities": ["bench"] });
        let claim = json!({ "session_id": agent.session, "wait_ms": 1000 });
        json_post(http, format!("{url}/v1/tasks"), task).await?;
        let claimed = json_post(http, format!("{url}/v1/tasks/claim"), claim).await?;
        let (task_id, token) = claimed_task(&claimed)?;
        let done = json!({ "fencing_token": token, "result": 1 });
        json_post(http, format!("{url}/v1/tasks/{task_id}/complete"), done)
            .await
            .map(drop)
    })
    .await
}

/// Each client has a session and loops acquire → release, on its own lock or (with
/// `contended-lock`) on one lock for all. One op = one acquire + release.
async fn lock_cycle(
    args: &RunArgs,
    http: &reqwest::Client,
    urls: &[String],
    progress: Arc<Progress>,
) -> anyhow::Result<Measured> {
    let contended = args.workload == Workload::ContendedLock;
    let mut lockers = with_sessions(args, http, urls, 0).await?;
    for locker in &mut lockers {
        locker.lock = if contended {
            "bench-lock".into()
        } else {
            format!("bench-lock-{}", locker.index).into()
        };
    }
    let duration = Duration::from_secs(args.duration);
    closed_loop(lockers, duration, progress, |locker, _| async move {
        let (http, url, lock) = (&locker.http, &locker.url, &locker.lock);
        let acquire = json!({ "session_id": locker.session, "wait_ms": 5000 });
        let granted = json_post(http, format!("{url}/v1/locks/{lock}/acquire"), acquire).await?;
        let token = granted["fencing_token"].as_u64().ok_or("not granted")?;
        let release = json!({ "session_id": locker.session, "fencing_token": token });
        json_post(http, format!("{url}/v1/locks/{lock}/release"), release)
            .await
            .map(drop)
    })
    .await
}

async fn last_log_index(http: &reqwest::Client, url: &str) -> anyhow::Result<u64> {
    cluster_status(http, url).await?["last_log_index"]
        .as_u64()
        .context("no last_log_index")
}

/// `--sessions` sessions, each renewed once a second by `--clients` senders for
/// `--duration` seconds; reports the Raft log entries per second that costs.
async fn keepalive(
    args: &RunArgs,
    http: &reqwest::Client,
    url: &str,
    progress: Arc<Progress>,
) -> anyhow::Result<(Measured, Map<String, Value>)> {
    // Created concurrently, with a TTL well above the time creating them all takes.
    let creators: Vec<_> = (0..args.clients)
        .map(|client| {
            let (http, url) = (http.clone(), url.to_owned());
            let (clients, total, ttl_ms) = (args.clients, args.sessions, args.ttl_secs() * 1000);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in (client..total).step_by(clients) {
                    let body =
                        json!({ "name": format!("ka-{i}"), "capacity": 0, "ttl_ms": ttl_ms });
                    if let Ok(created) = json_post(&http, format!("{url}/v1/sessions"), body).await
                    {
                        ids.push(created["session_id"].as_u64().unwrap_or(0));
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
    let before = last_log_index(http, url).await?;
    let started = Instant::now();
    let senders: Vec<_> = (0..args.clients)
        .map(|client| {
            let (http, sessions, url) = (http.clone(), sessions.clone(), url.to_owned());
            let (clients, seconds, progress) = (args.clients, args.duration, progress.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for second in 0..seconds {
                    tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
                    for id in sessions.iter().skip(client).step_by(clients) {
                        let sent = Instant::now();
                        let url = format!("{url}/v1/sessions/{id}/keepalive");
                        let outcome: Outcome = succeeded(http.post(url)).await.map(drop);
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
    let entries = last_log_index(http, url).await? - before;
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
