//! Closed-loop load generator: N clients each send one request at a time for a fixed
//! duration against a set of Conclave nodes, then report ops/s and latency
//! percentiles. Workloads so far: `put` (64-byte values), `get` (linearizable),
//! `stale-get`, `task-cycle` (each client is an agent: submit → claim → complete)
//! and `keepalive` (`--sessions` sessions renewed once a second; reports the log
//! entries per second this costs). The full suite with etcd side by side is issue 6.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Workload {
    Put,
    Get,
    StaleGet,
    TaskCycle,
    Keepalive,
    /// Acquire + release of a lock per client (distinct locks).
    Lock,
    /// Acquire (waiting) + release of one lock shared by all clients.
    ContendedLock,
}

#[derive(Parser)]
struct Args {
    /// Node base URLs; clients are spread over them round-robin.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:7000")]
    urls: Vec<String>,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, default_value_t = 5)]
    duration: u64,
    #[arg(long, value_enum, default_value = "put")]
    workload: Workload,
    /// Sessions kept alive by the `keepalive` workload.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
}

#[derive(Default)]
struct ClientResult {
    latencies_us: Vec<u64>,
    errors: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()?;
    match args.workload {
        Workload::TaskCycle => return task_cycle(&args, &http).await,
        Workload::Keepalive => return keepalive(&args, &http).await,
        Workload::Lock | Workload::ContendedLock => return lock_cycle(&args, &http).await,
        _ => {}
    }
    let value = serde_json::json!({ "value": "x".repeat(64) }).to_string();
    let value = Arc::new(value);
    if !matches!(args.workload, Workload::Put) {
        // Keys to read.
        for i in 0..args.clients {
            http.put(format!("{}/v1/kv/bench/{i}", args.urls[0]))
                .body(value.to_string())
                .send()
                .await?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|client| {
            let (http, value, workload) = (http.clone(), value.clone(), args.workload);
            let url = args.urls[client % args.urls.len()].clone();
            tokio::spawn(async move {
                let mut result = ClientResult::default();
                let mut sequence = 0u64;
                while Instant::now() < deadline {
                    sequence += 1;
                    let request = match workload {
                        Workload::Put => http
                            .put(format!("{url}/v1/kv/bench/{client}/{}", sequence % 1000))
                            .body(value.to_string()),
                        Workload::Get => http.get(format!("{url}/v1/kv/bench/{client}")),
                        Workload::StaleGet => {
                            http.get(format!("{url}/v1/kv/bench/{client}?consistency=stale"))
                        }
                        Workload::TaskCycle
                        | Workload::Keepalive
                        | Workload::Lock
                        | Workload::ContendedLock => unreachable!("handled above"),
                    };
                    let sent = Instant::now();
                    match request.send().await {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            result.latencies_us.push(sent.elapsed().as_micros() as u64);
                        }
                        _ => result.errors += 1,
                    }
                }
                result
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await?);
    }
    report(
        &format!("{:?}", args.workload),
        args.clients,
        started,
        results,
    );
    Ok(())
}

fn report(workload: &str, clients: usize, started: Instant, results: Vec<ClientResult>) {
    let elapsed = started.elapsed().as_secs_f64();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let mut latencies: Vec<u64> = results.into_iter().flat_map(|r| r.latencies_us).collect();
    latencies.sort_unstable();
    let at = |p: f64| {
        let index = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(index).copied().unwrap_or(0) as f64 / 1000.0
    };
    println!(
        "workload={workload} clients={clients} ops={} ops/s={:.0} p50={:.2}ms p99={:.2}ms max={:.2}ms errors={errors}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        at(0.5),
        at(0.99),
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
}

async fn json_post(
    http: &reqwest::Client,
    url: String,
    body: serde_json::Value,
) -> Option<serde_json::Value> {
    let response = http.post(url).json(&body).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok().or(Some(serde_json::Value::Null))
}

/// Each client is an agent with its own session (capacity 1): it submits a task,
/// claims whatever is assigned to it, and completes it. One op = one full cycle.
async fn task_cycle(args: &Args, http: &reqwest::Client) -> anyhow::Result<()> {
    let mut agents = Vec::new();
    for client in 0..args.clients {
        let url = args.urls[client % args.urls.len()].clone();
        let body = serde_json::json!({ "name": format!("bench-{client}"), "capabilities": ["bench"], "capacity": 1, "ttl_ms": 60_000 });
        let session = json_post(http, format!("{url}/v1/sessions"), body)
            .await
            .ok_or_else(|| anyhow::anyhow!("session"))?;
        agents.push((url, session["session_id"].as_u64().unwrap_or(0)));
    }
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let tasks: Vec<_> = agents
        .into_iter()
        .map(|(url, session)| {
            let http = http.clone();
            tokio::spawn(async move {
                let mut result = ClientResult::default();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let task = serde_json::json!({ "kind": "bench", "payload": "x", "required_capabilities": ["bench"] });
                    let claim = serde_json::json!({ "session_id": session, "wait_ms": 1000 });
                    let cycle = async {
                        json_post(&http, format!("{url}/v1/tasks"), task).await?;
                        let claimed = json_post(&http, format!("{url}/v1/tasks/claim"), claim).await?;
                        let task_id = claimed["task"]["task_id"].as_u64()?;
                        let token = claimed["fencing_token"].as_u64()?;
                        let done = serde_json::json!({ "fencing_token": token, "result": 1 });
                        json_post(&http, format!("{url}/v1/tasks/{task_id}/complete"), done).await
                    };
                    match cycle.await {
                        Some(_) => result.latencies_us.push(sent.elapsed().as_micros() as u64),
                        None => result.errors += 1,
                    }
                }
                result
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await?);
    }
    report("TaskCycle", args.clients, started, results);
    Ok(())
}

async fn last_log_index(http: &reqwest::Client, url: &str) -> anyhow::Result<u64> {
    let cluster: serde_json::Value = http
        .get(format!("{url}/v1/cluster"))
        .send()
        .await?
        .json()
        .await?;
    cluster["last_log_index"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no last_log_index"))
}

/// `--sessions` sessions, each renewed once a second by `--clients` senders for
/// `--duration` seconds; reports the Raft log entries per second that costs.
async fn keepalive(args: &Args, http: &reqwest::Client) -> anyhow::Result<()> {
    let url = args.urls[0].clone();
    // Created concurrently, with a TTL well above the time creating them all takes.
    let creators: Vec<_> = (0..args.clients)
        .map(|client| {
            let (http, url) = (http.clone(), url.clone());
            let (clients, total) = (args.clients, args.sessions);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in (client..total).step_by(clients) {
                    let body = serde_json::json!({ "name": format!("ka-{i}"), "capacity": 0, "ttl_ms": 120_000 });
                    if let Some(created) = json_post(&http, format!("{url}/v1/sessions"), body).await {
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
    let before = last_log_index(http, &url).await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|client| {
            let (http, sessions, url) = (http.clone(), sessions.clone(), url.clone());
            let (clients, seconds) = (args.clients, args.duration);
            tokio::spawn(async move {
                let mut result = ClientResult::default();
                for second in 0..seconds {
                    let round_start = started + Duration::from_secs(second);
                    tokio::time::sleep_until(round_start.into()).await;
                    for id in sessions.iter().skip(client).step_by(clients) {
                        let sent = Instant::now();
                        match http
                            .post(format!("{url}/v1/sessions/{id}/keepalive"))
                            .send()
                            .await
                        {
                            Ok(r) if r.status().is_success() => {
                                result.latencies_us.push(sent.elapsed().as_micros() as u64)
                            }
                            _ => result.errors += 1,
                        }
                    }
                }
                result
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let entries = last_log_index(http, &url).await? - before;
    report("Keepalive", args.clients, started, results);
    println!(
        "keepalive sessions={} log_entries={entries} entries/s={:.1} over {elapsed:.1}s",
        args.sessions,
        entries as f64 / elapsed
    );
    Ok(())
}

/// Each client has a session and loops acquire → release, on its own lock or (with
/// `contended-lock`) on one lock for all. One op = one acquire + release.
async fn lock_cycle(args: &Args, http: &reqwest::Client) -> anyhow::Result<()> {
    let contended = matches!(args.workload, Workload::ContendedLock);
    let mut clients = Vec::new();
    for client in 0..args.clients {
        let url = args.urls[client % args.urls.len()].clone();
        let body = serde_json::json!({ "name": format!("locker-{client}"), "capacity": 0, "ttl_ms": 60_000 });
        let session = json_post(http, format!("{url}/v1/sessions"), body)
            .await
            .ok_or_else(|| anyhow::anyhow!("session"))?;
        clients.push((url, session["session_id"].as_u64().unwrap_or(0), client));
    }
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(url, session, client)| {
            let http = http.clone();
            let lock = if contended {
                "bench-lock".to_string()
            } else {
                format!("bench-lock-{client}")
            };
            tokio::spawn(async move {
                let mut result = ClientResult::default();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let acquire = serde_json::json!({ "session_id": session, "wait_ms": 5000 });
                    let cycle = async {
                        let granted =
                            json_post(&http, format!("{url}/v1/locks/{lock}/acquire"), acquire)
                                .await?;
                        let token = granted["fencing_token"].as_u64()?;
                        let release =
                            serde_json::json!({ "session_id": session, "fencing_token": token });
                        json_post(&http, format!("{url}/v1/locks/{lock}/release"), release).await
                    };
                    match cycle.await {
                        Some(_) => result.latencies_us.push(sent.elapsed().as_micros() as u64),
                        None => result.errors += 1,
                    }
                }
                result
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await?);
    }
    report(
        if contended { "ContendedLock" } else { "Lock" },
        args.clients,
        started,
        results,
    );
    Ok(())
}
