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
//!
//! Each request is one call of the client library on the agent's node
//! (`conclave::Nodes`: one attempt, no retry), so what fails is counted as it fails.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conclave_client::{Client, Consistency};
use serde_json::{json, Map, Value};

use crate::cli::RunArgs;
use crate::conclave::{acquire, claimed_task, complete, kind, release, session, task, Nodes};
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

/// One agent: the client of its node, and its session.
struct Agent {
    api: Client,
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
    nodes: &Nodes,
    progress: Arc<Progress>,
) -> anyhow::Result<(Measured, Map<String, Value>)> {
    let mut agents = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let api = nodes.client(index).clone();
        let own = format!("mixed-{index}");
        let mut body = session(own.clone(), &["bench", &own], 1, TTL_MS);
        body.metadata = Some(json!({ "bench": "mixed" }));
        let created = api.session_create(&body).await;
        let session = created
            .map_err(|error| anyhow::anyhow!("opening a session: {}", kind(error)))?
            .session_id;
        agents.push(Agent {
            api,
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
                let _ = agent.api.session_end(agent.session).await;
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
    let (api, index, session) = (&agent.api, agent.index, agent.session);
    let submit = task(
        "mixed",
        json!("x".repeat(64)),
        vec![format!("mixed-{index}")],
    );
    let value = json!("v".repeat(64));
    let key = format!("mixed/{index}");
    let own_lock = format!("mixed-lock-{index}");
    let mut renewed = Instant::now();
    let mut iteration = 0u64;
    loop {
        iteration += 1;
        if renewed.elapsed() >= KEEPALIVE_EVERY {
            renewed = Instant::now();
            let sent = async { api.session_keepalive(session).await.map_err(kind) };
            if recorder.op("keepalive", sent).await.is_none() {
                return;
            }
        }

        // Task: submit (assigned to this session in the same apply), claim, complete.
        let submitted = async { api.task_submit(&submit).await.map_err(kind) };
        let Some(submitted) = recorder.op("submit", submitted).await else {
            return;
        };
        if submitted.is_ok() {
            let claimed = async { claimed_task(api.task_claim(session, CLAIM_WAIT_MS).await) };
            let Some(claimed) = recorder.op("claim", claimed).await else {
                return;
            };
            if let Ok((task_id, token)) = claimed {
                let done = complete(token, json!({ "ok": true }));
                let completed = async { api.task_complete(task_id, &done).await.map_err(kind) };
                if recorder.op("complete", completed).await.is_none() {
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
            let granted = async {
                let granted = api.lock_acquire(lock, &acquire(session, wait_ms)).await;
                granted.map(|granted| granted.fencing_token).map_err(kind)
            };
            let Some(granted) = recorder.op(acquire_kind, granted).await else {
                return;
            };
            if let Ok(token) = granted {
                let released = async {
                    api.lock_release(lock, &release(session, token))
                        .await
                        .map_err(kind)
                };
                if recorder.op(release_kind, released).await.is_none() {
                    return;
                }
            }
        }

        // Key/value: write its own key, read it back linearizably.
        let put = async { api.kv_put(&key, &value).await.map_err(kind) };
        if recorder.op("put", put).await.is_none() {
            return;
        }
        let get = async {
            let read = api.kv_get(&key, Consistency::Linearizable).await;
            read.map(drop).map_err(kind)
        };
        if recorder.op("get", get).await.is_none() {
            return;
        }
    }
}
