//! Conclave only, the `mixed` workload: a mixed agent workload. Each client is an
//! agent with its own session (capabilities `bench` and one of its own, capacity 1,
//! TTL 10 s) that it renews about once a second in its loop, and each iteration it
//! - submits a task only it can run, claims it (1 s long poll) and completes it;
//! - acquires (no wait) and releases a lock of its own, and every
//!   [`SHARED_LOCK_EVERY`]th iteration also a lock shared by all agents (waiting);
//! - puts a 64-byte value under a key of its own and reads it back (linearizable).
//!
//! **Every HTTP request is one op** (keepalives included): ops/s is requests per
//! second, and p50/p99/max are over all requests of every kind together. The JSON
//! line adds `ops_by_kind`: per kind of request, its count and p50/p99 in µs.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Map, Value};

use crate::cli::RunArgs;
use crate::conclave::{claimed_task, json_post, succeeded};
use crate::driver::{Measured, Outcome, Progress, Tally};

/// One in this many iterations also takes the lock shared by all agents.
pub const SHARED_LOCK_EVERY: u64 = 10;
/// Session TTL; renewed about every [`KEEPALIVE_EVERY`].
const TTL_MS: u64 = 10_000;
const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);
/// Long poll of the claim (the task is assigned at submit, so it is normally instant).
const CLAIM_WAIT_MS: u64 = 1_000;
/// Wait for the shared lock; below the TTL so keepalives keep up.
const SHARED_WAIT_MS: u64 = 2_000;

/// One agent: its connection pool, node and session.
struct Agent {
    http: reqwest::Client,
    url: String,
    index: usize,
    session: u64,
}

/// An agent's running record: latencies and failures per kind of request, and a
/// deadline after which nothing more is counted.
struct Recorder {
    by_kind: BTreeMap<&'static str, Tally>,
    deadline: Instant,
    progress: Arc<Progress>,
}

impl Recorder {
    /// Runs one request if there is time left; `None` once the window is over (the
    /// request that crosses the deadline is neither counted nor timed).
    async fn op<T>(
        &mut self,
        kind: &'static str,
        request: impl Future<Output = Result<T, String>>,
    ) -> Option<Result<T, String>> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let sent = Instant::now();
        let result = request.await;
        if Instant::now() > self.deadline {
            return None;
        }
        let outcome: Outcome = result.as_ref().map(drop).map_err(Clone::clone);
        self.by_kind
            .entry(kind)
            .or_default()
            .record(sent, outcome, &self.progress);
        Some(result)
    }
}

pub async fn run(
    args: &RunArgs,
    http: &reqwest::Client,
    urls: &[String],
    progress: Arc<Progress>,
) -> anyhow::Result<(Measured, Map<String, Value>)> {
    let mut agents = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let url = urls[index % urls.len()].clone();
        let body = json!({ "name": format!("mixed-{index}"),
            "capabilities": ["bench", format!("mixed-{index}")], "capacity": 1,
            "ttl_ms": TTL_MS, "metadata": { "bench": "mixed" } });
        let session = json_post(http, format!("{url}/v1/sessions"), body)
            .await
            .map_err(|kind| anyhow::anyhow!("opening a session: {kind}"))?;
        let session = session["session_id"].as_u64().context("session_id")?;
        agents.push(Agent {
            http: http.clone(),
            url,
            index,
            session,
        });
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let loops: Vec<_> = agents
        .into_iter()
        .map(|agent| {
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut recorder = Recorder {
                    by_kind: BTreeMap::new(),
                    deadline,
                    progress,
                };
                agent_loop(&agent, &mut recorder).await;
                // Ending the session frees its lock and task slot at once.
                let url = format!("{}/v1/sessions/{}", agent.url, agent.session);
                let _ = agent.http.delete(url).send().await;
                recorder.by_kind
            })
        })
        .collect();
    let mut by_kind: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for agent in loops {
        for (kind, tally) in agent.await? {
            by_kind.entry(kind).or_default().merge(tally);
        }
    }
    let elapsed = Duration::from_secs(args.duration);
    let mut total = Measured {
        latencies_us: Vec::new(),
        errors: 0,
        error_kinds: BTreeMap::new(),
        elapsed,
    };
    let mut kinds = Map::new();
    let mut shown = Vec::new();
    for (kind, tally) in by_kind {
        let measured = tally.finish(elapsed);
        let at = |fraction: f64| {
            let latencies = &measured.latencies_us;
            let index = ((latencies.len() as f64 * fraction) as usize)
                .min(latencies.len().saturating_sub(1));
            latencies.get(index).copied().unwrap_or(0)
        };
        shown.push(format!(
            "{kind} {} p99={:.2}ms",
            measured.latencies_us.len(),
            at(0.99) as f64 / 1000.0
        ));
        kinds.insert(
            kind.into(),
            json!({ "ops": measured.latencies_us.len(), "p50_us": at(0.5),
                "p99_us": at(0.99), "errors": measured.errors }),
        );
        total.latencies_us.extend(&measured.latencies_us);
        total.errors += measured.errors;
        for (error, count) in measured.error_kinds {
            *total
                .error_kinds
                .entry(format!("{kind}: {error}"))
                .or_default() += count;
        }
    }
    total.latencies_us.sort_unstable();
    println!("mixed ops by kind: {}", shown.join(", "));
    let mut extra = Map::new();
    extra.insert("ops_by_kind".into(), Value::Object(kinds));
    Ok((total, extra))
}

/// The agent's iterations until the deadline; a failed step skips the steps that
/// depend on it, never the rest of the iteration.
async fn agent_loop(agent: &Agent, recorder: &mut Recorder) {
    let (http, url, index, session) = (&agent.http, &agent.url, agent.index, agent.session);
    let payload = "x".repeat(64);
    let value = json!({ "value": "v".repeat(64) }).to_string();
    let own_lock = format!("mixed-lock-{index}");
    let mut renewed = Instant::now();
    let mut iteration = 0u64;
    loop {
        iteration += 1;
        if renewed.elapsed() >= KEEPALIVE_EVERY {
            renewed = Instant::now();
            let keepalive = format!("{url}/v1/sessions/{session}/keepalive");
            let sent = succeeded(http.post(keepalive));
            if recorder.op("keepalive", sent).await.is_none() {
                return;
            }
        }

        // Task: submit (assigned to this session in the same apply), claim, complete.
        let task = json!({ "kind": "mixed", "payload": payload,
            "required_capabilities": [format!("mixed-{index}")] });
        let submit = json_post(http, format!("{url}/v1/tasks"), task);
        let Some(submitted) = recorder.op("submit", submit).await else {
            return;
        };
        if submitted.is_ok() {
            let claim = json!({ "session_id": session, "wait_ms": CLAIM_WAIT_MS });
            let claimed = json_post(http, format!("{url}/v1/tasks/claim"), claim);
            let claimed = async { claimed_task(&claimed.await?) };
            let Some(claimed) = recorder.op("claim", claimed).await else {
                return;
            };
            if let Ok((task_id, token)) = claimed {
                let done = json!({ "fencing_token": token, "result": { "ok": true } });
                let complete = json_post(http, format!("{url}/v1/tasks/{task_id}/complete"), done);
                if recorder.op("complete", complete).await.is_none() {
                    return;
                }
            }
        }

        // Locks: its own (never contended), and now and then the shared one.
        let mut locks = vec![(own_lock.as_str(), 0, "acquire", "release")];
        if iteration.is_multiple_of(SHARED_LOCK_EVERY) {
            locks.push((
                "mixed-shared",
                SHARED_WAIT_MS,
                "acquire-shared",
                "release-shared",
            ));
        }
        for (lock, wait_ms, acquire_kind, release_kind) in locks {
            let acquire = json!({ "session_id": session, "wait_ms": wait_ms });
            let granted = json_post(http, format!("{url}/v1/locks/{lock}/acquire"), acquire);
            let granted = async {
                granted.await?["fencing_token"]
                    .as_u64()
                    .ok_or_else(|| "not granted".to_owned())
            };
            let Some(granted) = recorder.op(acquire_kind, granted).await else {
                return;
            };
            if let Ok(token) = granted {
                let release = json!({ "session_id": session, "fencing_token": token });
                let released = json_post(http, format!("{url}/v1/locks/{lock}/release"), release);
                if recorder.op(release_kind, released).await.is_none() {
                    return;
                }
            }
        }

        // Key/value: write its own key, read it back linearizably.
        let key = format!("{url}/v1/kv/mixed/{index}");
        let put = succeeded(http.put(&key).body(value.clone()));
        let put = async { put.await.map(drop) };
        if recorder.op("put", put).await.is_none() {
            return;
        }
        let get = async {
            let response = succeeded(http.get(&key)).await?;
            response
                .bytes()
                .await
                .map(drop)
                .map_err(|_| "transport".into())
        };
        if recorder.op("get", get).await.is_none() {
            return;
        }
    }
}
