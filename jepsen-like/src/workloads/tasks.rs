//! The tasks workload: submitters put tasks with unique payloads on the queue, agents
//! (sessions with the `jepsen` capability, kept alive in the background: `session.rs`,
//! `Create::Idempotent`, `Keepalive::Rotating`) claim,
//! heartbeat, complete or fail them under fencing tokens, while the nemesis injects
//! faults; some agents stall on purpose so that their work is taken from them.
//!
//! Clients:
//! - **Submitters** send `POST /v1/tasks` with payload `{"id": p}`, `idempotency_key`
//!   `p` and `request_id` `submit-p` (p unique), and hold back while too many
//!   acknowledged tasks are not yet completed.
//! - **Agents** long-poll `POST /v1/tasks/claim` (1 s), work a little, sometimes
//!   heartbeat, then complete (`result` `{"tag": t}`, t unique per assignment, also
//!   the `request_id`) or, now and then, fail retryably. Half of the unstalled
//!   finishes carry `claim_next` (no wait): a next task the completion's command
//!   claimed is recorded as a claim and worked without a claim request. A few times per run an agent
//!   stalls while holding a task: past the task's lease (its session kept alive), or
//!   past its session's TTL (keepalives stopped). The task is requeued meanwhile, and
//!   the late `complete` is expected to be refused (`409 stale_fencing_token` or
//!   `wrong_state`: a `fail`, counted, not an anomaly).
//!
//! Outcomes follow `workloads/mod.rs` (an indeterminate write is never assumed
//! absent). After healing, every `unknown` submit, complete and fail is resolved by
//! retrying it with its `request_id` (the server answers the original result or
//! applies it now); agents keep working until every task is terminal or 20 s have
//! passed, and then every task is read (`GET /v1/tasks?kind=jepsen`, paged).
//!
//! How the checkers reason, against that final read:
//!
//! - **`no-lost-task`**: each acknowledged submit's task exists, carries the payload
//!   it was submitted with, and is in a state the queue may leave it in (`pending`,
//!   `queued`, `assigned`, `failed`, `succeeded`, `dead`): nobody cancels, so never
//!   `cancelled`, and never missing.
//! - **`no-phantom-task`**: each stored task was submitted by a submit that may have
//!   taken effect (`ok` or `unknown`), once per payload (the idempotency key and the
//!   request id must both deduplicate), under the id its acknowledgement gave.
//! - **`no-double-completion`**: at most one acknowledged completion per task (a
//!   same-id retry is the same completion), and its fencing token is the one the
//!   task's final record shows (the token of its last assignment).
//! - **`completed-state`**: every acknowledged completion left the task `succeeded`
//!   with its result; every `succeeded` task's result is that of a completion that
//!   may have taken effect under the final token: one refused (`409`) or never
//!   applied must not have.
//! - **`lease-order`**: fencing tokens of one task never repeat across acknowledged
//!   claims, and grow in real time (a claim invoked after another was answered has a
//!   larger token): at most one valid lease at a time.
//!
//! Deliveries of one task to several claims (at-least-once), refused stale
//! completions and stalls are counted in the detail, not failed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::session::{self, Create, Keepalive, Net, Session, Spec};
use super::{http_client, send, Check, CheckVerdict, Context, Op, Sent, Status, WorkloadResult};

const KIND: &str = "jepsen";
const CAPABILITY: &str = "jepsen";
const LEASE_MS: u64 = 2_000;
const MAX_ATTEMPTS: u32 = 8;
const SESSION_TTL_MS: u64 = 4_000;
const CLAIM_WAIT_MS: u64 = 1_000;
/// Submitters wait while this many acknowledged tasks are not completed yet.
const MAX_BACKLOG: i64 = 30;
/// How long agents keep draining the queue after healing.
const DRAIN: Duration = Duration::from_secs(20);
/// Per mille of processed tasks: failed on purpose; stalled past the lease; stalled
/// past the session TTL; heartbeated.
const FAIL_PER_MILLE: u32 = 80;
const LEASE_STALL_PER_MILLE: u32 = 25;
const SESSION_STALL_PER_MILLE: u32 = 15;
const HEARTBEAT_PER_MILLE: u32 = 300;
const RESOLVE_ATTEMPTS: usize = 20;
const FINAL_READ_ATTEMPTS: usize = 30;

/// One submit.
#[derive(Debug, Clone)]
struct Submit {
    payload: String,
    /// The whole body (with `request_id`), to resolve it by retrying.
    body: Value,
    invoke_ns: u64,
    status: Status,
    /// From the acknowledgement.
    task_id: Option<u64>,
    node: usize,
}

/// One acknowledged claim.
#[derive(Debug, Clone)]
struct Claim {
    task_id: u64,
    token: u64,
    session: u64,
    invoke_ns: u64,
    complete_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FinishKind {
    Complete,
    Fail,
}

/// One complete or fail.
#[derive(Debug, Clone)]
struct Finish {
    kind: FinishKind,
    task_id: u64,
    token: u64,
    /// The `request_id` and, for a completion, the result's tag.
    tag: String,
    body: Value,
    status: Status,
    /// The refusal's code, for a `fail`.
    code: Option<String>,
    /// Why the agent was late, if it stalled on purpose.
    stalled: Option<&'static str>,
    node: usize,
    /// When the first attempt was sent (run clock).
    invoke_ns: u64,
}

/// A task as the final read shows it.
#[derive(Debug, Clone)]
struct View {
    task_id: u64,
    state: String,
    token: Option<u64>,
    payload: Option<String>,
    result_tag: Option<String>,
    attempts: u64,
}

/// Shared between the clients and the driver.
struct Shared {
    stop: AtomicBool,
    /// Acknowledged submits minus tasks seen finished.
    backlog: AtomicI64,
}

struct Client {
    index: usize,
    processes: usize,
    urls: Vec<String>,
    seed: u64,
    started: Instant,
    until: Instant,
    shared: Arc<Shared>,
}

impl Client {
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn rng(&self) -> SmallRng {
        SmallRng::seed_from_u64(self.seed.wrapping_add(self.index as u64 * 7919))
    }
}

#[derive(Default)]
struct Record {
    submits: Vec<Submit>,
    claims: Vec<Claim>,
    /// Claims made by a completion's `claim_next` (also in `claims`).
    claims_by_finish: u64,
    finishes: Vec<Finish>,
    ops: Vec<Op>,
    lease_stalls: u64,
    session_stalls: u64,
}

/// Runs submitters and agents, drains after healing, reads every task and checks.
pub async fn run(mut context: Context) -> anyhow::Result<WorkloadResult> {
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        backlog: AtomicI64::new(0),
    });
    let submitters = (context.processes / 3).clamp(1, 2);
    let agents = context.processes.saturating_sub(submitters).max(1);
    let client = |index: usize| Client {
        index,
        processes: submitters + agents,
        urls: context.urls.clone(),
        seed: context.seed,
        started: context.started,
        until: context.until,
        shared: shared.clone(),
    };
    let submitter_handles: Vec<_> = (0..submitters)
        .map(|index| tokio::spawn(client(index).submitter()))
        .collect();
    let agent_handles: Vec<_> = (submitters..submitters + agents)
        .map(|index| tokio::spawn(client(index).agent()))
        .collect();
    let mut record = Record::default();
    for handle in submitter_handles {
        let part = handle.await?;
        record.submits.extend(part.submits);
        record.ops.extend(part.ops);
    }
    context.wait_healed().await;
    let http = context.http();

    // Resolve indeterminate submits with a same-id retry (agents keep running).
    let (mut resolved_submits, mut unresolved_submits) = (0u64, 0u64);
    for submit in record
        .submits
        .iter_mut()
        .filter(|s| s.status == Status::Unknown)
    {
        // Too old: the server may have forgotten the id, so a retry proves nothing.
        if !context.resolvable(submit.invoke_ns) {
            unresolved_submits += 1;
            continue;
        }
        let url = |node: usize| format!("{}/v1/tasks", context.urls[node]);
        let sent = resolve(
            &context,
            &http,
            submit.node,
            url,
            &submit.body,
            &mut record.ops,
        )
        .await;
        match sent {
            Some(Sent::Answer(200, body)) => {
                resolved_submits += 1;
                submit.status = Status::Ok;
                submit.task_id = body["task_id"].as_u64();
                shared.backlog.fetch_add(1, Ordering::Relaxed);
            }
            _ => unresolved_submits += 1,
        }
    }

    // Drain: until every task is terminal, or DRAIN has passed.
    let drain_until = Instant::now() + DRAIN;
    let mut drained = false;
    let mut polls = 0;
    while Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        polls += 1;
        if let Some(views) = list_tasks(&context, &http, polls, None).await {
            if views
                .iter()
                .all(|v| matches!(v.state.as_str(), "succeeded" | "dead"))
            {
                drained = true;
                break;
            }
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for handle in agent_handles {
        let part = handle.await?;
        record.claims.extend(part.claims);
        record.claims_by_finish += part.claims_by_finish;
        record.finishes.extend(part.finishes);
        record.ops.extend(part.ops);
        record.lease_stalls += part.lease_stalls;
        record.session_stalls += part.session_stalls;
    }

    // Resolve indeterminate completes and fails the same way.
    let (mut resolved_finishes, mut unresolved_finishes) = (0u64, 0u64);
    for finish in record
        .finishes
        .iter_mut()
        .filter(|f| f.status == Status::Unknown)
    {
        // Too old: the server may have forgotten the id, so a retry proves nothing.
        if !context.resolvable(finish.invoke_ns) {
            unresolved_finishes += 1;
            continue;
        }
        let verb = match finish.kind {
            FinishKind::Complete => "complete",
            FinishKind::Fail => "fail",
        };
        let task_id = finish.task_id;
        let url = |node: usize| format!("{}/v1/tasks/{task_id}/{verb}", context.urls[node]);
        let sent = resolve(
            &context,
            &http,
            finish.node,
            url,
            &finish.body,
            &mut record.ops,
        )
        .await;
        match sent {
            Some(sent @ Sent::Answer(200..=499, _)) => {
                resolved_finishes += 1;
                finish.status = sent.status();
                finish.code = sent.error_code().map(str::to_owned);
            }
            _ => unresolved_finishes += 1,
        }
    }

    let mut views = None;
    for attempt in 0..FINAL_READ_ATTEMPTS {
        let invoke_ns = context.now_ns();
        let read = list_tasks(&context, &http, attempt, None).await;
        record.ops.push(Op {
            process: u64::MAX,
            f: "read".into(),
            key: "tasks".into(),
            value: json!({ "tasks": read.as_ref().map(Vec::len) }),
            status: if read.is_some() {
                Status::Ok
            } else {
                Status::Fail
            },
            invoke_ns,
            complete_ns: Some(context.now_ns()),
            node: (attempt % context.urls.len()) as u64 + 1,
        });
        if read.is_some() {
            views = read;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut checks = check(&record, views.as_deref());
    let mut states: BTreeMap<&str, u64> = BTreeMap::new();
    for view in views.iter().flatten() {
        *states.entry(view.state.as_str()).or_default() += 1;
    }
    let mut deliveries: BTreeMap<u64, u64> = BTreeMap::new();
    for claim in &record.claims {
        *deliveries.entry(claim.task_id).or_default() += 1;
    }
    let refused = |code: &str| {
        record
            .finishes
            .iter()
            .filter(|f| f.kind == FinishKind::Complete && f.code.as_deref() == Some(code))
            .count()
    };
    let summary = json!({
        "submits": record.submits.len(),
        "acknowledged_submits": record.submits.iter().filter(|s| s.status == Status::Ok).count(),
        "unknown_submits_resolved": resolved_submits,
        "unknown_submits_unresolved": unresolved_submits,
        "claims": record.claims.len(),
        "claims_by_finish": record.claims_by_finish,
        "tasks_delivered_more_than_once": deliveries.values().filter(|n| **n > 1).count(),
        "completions_acknowledged": record.finishes.iter().filter(|f| f.kind == FinishKind::Complete && f.status == Status::Ok).count(),
        "completions_refused_stale_token": refused("stale_fencing_token"),
        "completions_refused_wrong_state": refused("wrong_state"),
        "late_completions_after_stall": record.finishes.iter().filter(|f| f.stalled.is_some()).count(),
        "late_completions_after_stall_refused": record.finishes.iter().filter(|f| f.stalled.is_some() && f.status == Status::Fail).count(),
        "fails_acknowledged": record.finishes.iter().filter(|f| f.kind == FinishKind::Fail && f.status == Status::Ok).count(),
        "unknown_finishes_resolved": resolved_finishes,
        "unknown_finishes_unresolved": unresolved_finishes,
        "lease_stalls": record.lease_stalls,
        "session_stalls": record.session_stalls,
        "drained": drained,
        "final_states": states,
    });
    checks[0].detail = json!({ "counts": summary, "violations": checks[0].detail });
    record.ops.sort_by_key(|op| op.invoke_ns);
    Ok(WorkloadResult {
        ops: record.ops,
        checks,
    })
}

/// Retries `body` at `url(node)` (rotating nodes) until the server answers it
/// definitely (2xx or 4xx); records every attempt.
async fn resolve(
    context: &Context,
    http: &reqwest::Client,
    first_node: usize,
    url: impl Fn(usize) -> String,
    body: &Value,
    ops: &mut Vec<Op>,
) -> Option<Sent> {
    for attempt in 0..RESOLVE_ATTEMPTS {
        let node = (first_node + attempt + 1) % context.urls.len();
        let invoke_ns = context.now_ns();
        let sent = send(http.post(url(node)).json(body)).await;
        let status = sent.status();
        ops.push(Op {
            process: u64::MAX,
            f: "resolve".into(),
            key: url(node),
            value: json!({ "request_id": body["request_id"], "answer": sent.body() }),
            status,
            invoke_ns,
            complete_ns: (status != Status::Unknown).then(|| context.now_ns()),
            node: node as u64 + 1,
        });
        if matches!(status, Status::Ok | Status::Fail) {
            return Some(sent);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Every task of [`KIND`], read linearizably through one node; `None` if any page
/// failed.
async fn list_tasks(
    context: &Context,
    http: &reqwest::Client,
    attempt: usize,
    state: Option<&str>,
) -> Option<Vec<View>> {
    let base = &context.urls[attempt % context.urls.len()];
    let mut views = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let mut query = vec![("kind", KIND.to_string()), ("limit", "500".to_string())];
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        if let Some(state) = state {
            query.push(("state", state.to_string()));
        }
        let sent = send(http.get(format!("{base}/v1/tasks")).query(&query)).await;
        let Sent::Answer(200, body) = sent else {
            return None;
        };
        for item in body["items"].as_array()? {
            views.push(View {
                task_id: item["task_id"].as_u64()?,
                state: item["state"].as_str()?.to_owned(),
                token: item["fencing_token"].as_u64(),
                payload: item["payload"]["id"].as_str().map(str::to_owned),
                result_tag: item["result"]["tag"].as_str().map(str::to_owned),
                attempts: item["attempts"].as_u64().unwrap_or(0),
            });
        }
        match body["next_after"].as_u64() {
            Some(next) => after = Some(next),
            None => return Some(views),
        }
    }
}

impl Client {
    async fn submitter(self) -> Record {
        let mut rng = self.rng();
        let http = http_client(Duration::from_millis(2_000));
        let mut process = self.index as u64;
        let mut record = Record::default();
        let mut sequence = 0u64;
        while Instant::now() < self.until {
            if self.shared.backlog.load(Ordering::Relaxed) >= MAX_BACKLOG {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            sequence += 1;
            let payload = format!("t{}-{sequence}", self.index);
            let body = json!({
                "kind": KIND,
                "payload": { "id": payload },
                "required_capabilities": [CAPABILITY],
                "lease_ms": LEASE_MS,
                "max_attempts": MAX_ATTEMPTS,
                "idempotency_key": payload,
                "request_id": format!("submit-{payload}"),
            });
            let node = rng.gen_range(0..self.urls.len());
            let invoke_ns = self.now_ns();
            let sent = send(
                http.post(format!("{}/v1/tasks", self.urls[node]))
                    .json(&body),
            )
            .await;
            let complete_ns = self.now_ns();
            let status = sent.status();
            let task_id = match &sent {
                Sent::Answer(200, answer) => answer["task_id"].as_u64(),
                _ => None,
            };
            if status == Status::Fail {
                eprintln!("tasks: submit of {payload} refused: {sent:?}");
            }
            record.ops.push(Op {
                process,
                f: "submit".into(),
                key: "tasks".into(),
                value: json!({ "payload": payload, "answer": sent.body() }),
                status,
                invoke_ns,
                complete_ns: (status != Status::Unknown).then_some(complete_ns),
                node: node as u64 + 1,
            });
            record.submits.push(Submit {
                payload,
                body,
                invoke_ns,
                status,
                task_id,
                node,
            });
            match status {
                Status::Ok => {
                    self.shared.backlog.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(0..40))).await;
                }
                Status::Unknown => process += self.processes as u64,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        record
    }

    async fn agent(self) -> Record {
        let mut rng = self.rng();
        let http = http_client(Duration::from_millis(2_000));
        let polling = http_client(Duration::from_millis(CLAIM_WAIT_MS + 2_000));
        let mut process = self.index as u64;
        let mut record = Record::default();
        let net = Net::with(self.urls.clone(), http.clone(), self.started);
        let mut session: Option<Session> = None;
        let mut created = 0u64;
        // A task the last completion claimed (`claim_next`), worked before claiming.
        let mut carried: Option<(u64, u64, u64)> = None;
        let stop = || self.shared.stop.load(Ordering::Relaxed);
        while !stop() {
            if let Some(next) = carried.take() {
                let live = session.take().expect("a completion's session");
                let (keep, next) = self
                    .work(&mut rng, &http, &live, next, &mut process, &mut record)
                    .await;
                carried = next.filter(|_| keep);
                session = keep.then_some(live);
                continue;
            }
            let live = match session.take() {
                Some(live) if live.is_alive() => live,
                _ => {
                    created += 1;
                    let spec = Spec {
                        body: json!({
                            "name": format!("agent-{}", self.index),
                            "capabilities": [CAPABILITY],
                            "capacity": 1,
                            "ttl_ms": SESSION_TTL_MS,
                        }),
                        ttl_ms: SESSION_TTL_MS,
                        create: Create::Idempotent {
                            request_id: format!("agent-session-{}-{created}", self.index),
                        },
                        keepalive: Keepalive::Rotating,
                    };
                    let ops = &mut record.ops;
                    let creating =
                        session::create(&net, &mut rng, &mut process, &spec, || !stop(), ops);
                    match creating.await {
                        Some(live) => live,
                        None => continue,
                    }
                }
            };
            let node = rng.gen_range(0..self.urls.len());
            let url = format!("{}/v1/tasks/claim", self.urls[node]);
            let invoke_ns = self.now_ns();
            let sent = send(
                polling
                    .post(&url)
                    .json(&json!({ "session_id": live.id, "wait_ms": CLAIM_WAIT_MS })),
            )
            .await;
            let complete_ns = self.now_ns();
            let status = sent.status();
            let claimed = match &sent {
                Sent::Answer(200, body) => body["task"]["task_id"]
                    .as_u64()
                    .zip(body["fencing_token"].as_u64())
                    .map(|(task_id, token)| (task_id, token, body["task"]["attempts"].as_u64())),
                _ => None,
            };
            record.ops.push(Op {
                process,
                f: "claim".into(),
                key: "tasks".into(),
                value: json!({
                    "session": live.id,
                    "task_id": claimed.map(|c| c.0),
                    "fencing_token": claimed.map(|c| c.1),
                }),
                status,
                invoke_ns,
                complete_ns: (status != Status::Unknown).then_some(complete_ns),
                node: node as u64 + 1,
            });
            if sent.error_code() == Some("session_not_found") {
                live.mark_gone(invoke_ns);
            }
            match status {
                Status::Unknown => process += self.processes as u64,
                Status::Unavailable | Status::Fail => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Status::Ok => {}
            }
            let Some((task_id, token, attempts)) = claimed else {
                session = Some(live);
                continue;
            };
            record.claims.push(Claim {
                task_id,
                token,
                session: live.id,
                invoke_ns,
                complete_ns,
            });
            let (keep, next) = self
                .work(
                    &mut rng,
                    &http,
                    &live,
                    (task_id, token, attempts.unwrap_or(1)),
                    &mut process,
                    &mut record,
                )
                .await;
            carried = next.filter(|_| keep);
            if keep {
                session = Some(live);
            }
        }
        record
    }

    /// Works on a claimed task and finishes it; false when the session should be
    /// dropped (it was left to expire). Half the finishes carry `claim_next` (no
    /// wait): the next task they claimed in the same command is returned, recorded
    /// as a claim.
    async fn work(
        &self,
        rng: &mut SmallRng,
        http: &reqwest::Client,
        live: &Session,
        (task_id, token, attempts): (u64, u64, u64),
        process: &mut u64,
        record: &mut Record,
    ) -> (bool, Option<(u64, u64, u64)>) {
        let mut stalled = None;
        let roll = rng.gen_range(0..1000);
        let stalls_allowed = Instant::now() < self.until;
        if stalls_allowed && roll < LEASE_STALL_PER_MILLE {
            stalled = Some("past its lease");
            record.lease_stalls += 1;
            tokio::time::sleep(Duration::from_millis(LEASE_MS + 1_000)).await;
        } else if stalls_allowed && roll < LEASE_STALL_PER_MILLE + SESSION_STALL_PER_MILLE {
            stalled = Some("past its session's TTL");
            record.session_stalls += 1;
            live.pause_keepalive(true);
            tokio::time::sleep(Duration::from_millis(SESSION_TTL_MS + 1_500)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..100))).await;
            if rng.gen_range(0..1000) < HEARTBEAT_PER_MILLE {
                let body = json!({
                    "fencing_token": token,
                    "progress": { "by": self.index },
                    "request_id": format!("heartbeat-{task_id}-{token}"),
                });
                let (sent, _) = self
                    .finish_request(http, rng, task_id, "heartbeat", &body, process, record)
                    .await;
                if sent.status() == Status::Fail {
                    // The task is no longer ours (reassigned or ended).
                    return (true, None);
                }
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..100))).await;
            }
        }
        // Fail only early attempts, so retry backoffs stay short.
        let kind = if stalled.is_none() && attempts <= 2 && rng.gen_range(0..1000) < FAIL_PER_MILLE
        {
            FinishKind::Fail
        } else {
            FinishKind::Complete
        };
        let tag = format!(
            "{}-{task_id}-{token}-a{}",
            match kind {
                FinishKind::Complete => "done",
                FinishKind::Fail => "fail",
            },
            self.index
        );
        let (verb, mut body) = match kind {
            FinishKind::Complete => (
                "complete",
                json!({
                    "fencing_token": token,
                    "result": { "tag": tag, "agent": self.index, "session": live.id },
                    "request_id": tag,
                }),
            ),
            FinishKind::Fail => (
                "fail",
                json!({
                    "fencing_token": token,
                    "error": "failed on purpose by the harness",
                    "retryable": true,
                    "request_id": tag,
                }),
            ),
        };
        let claim_next = stalled.is_none() && rng.gen_bool(0.5);
        if claim_next {
            body["claim_next"] = json!({ "wait_ms": 0 });
        }
        let invoke_ns = self.now_ns();
        let (sent, node) = self
            .finish_request(http, rng, task_id, verb, &body, process, record)
            .await;
        let status = sent.status();
        let next = match &sent {
            Sent::Answer(200, answer) if claim_next => {
                let next = &answer["next"];
                next["task"]["task_id"]
                    .as_u64()
                    .zip(next["fencing_token"].as_u64())
                    .map(|(id, token)| (id, token, next["task"]["attempts"].as_u64().unwrap_or(1)))
            }
            _ => None,
        };
        if let Some((next_id, next_token, _)) = next {
            // Answered after the finish's answer arrived: the recorded window holds
            // the real one, so the lease-order check stays sound.
            record.claims_by_finish += 1;
            record.claims.push(Claim {
                task_id: next_id,
                token: next_token,
                session: live.id,
                invoke_ns,
                complete_ns: self.now_ns(),
            });
        }
        let finished = match (&sent, kind) {
            (Sent::Answer(200, _), FinishKind::Complete) => true,
            (Sent::Answer(200, answer), FinishKind::Fail) => answer["state"] == "dead",
            _ => false,
        };
        if finished {
            self.shared.backlog.fetch_sub(1, Ordering::Relaxed);
        }
        record.finishes.push(Finish {
            kind,
            task_id,
            token,
            tag,
            body,
            status,
            code: sent.error_code().map(str::to_owned),
            stalled,
            node,
            invoke_ns,
        });
        (stalled != Some("past its session's TTL"), next)
    }

    /// Sends a heartbeat, complete or fail, retrying the same request while it
    /// certainly did not arrive; records every attempt.
    #[allow(clippy::too_many_arguments)]
    async fn finish_request(
        &self,
        http: &reqwest::Client,
        rng: &mut SmallRng,
        task_id: u64,
        verb: &str,
        body: &Value,
        process: &mut u64,
        record: &mut Record,
    ) -> (Sent, usize) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let node = rng.gen_range(0..self.urls.len());
            let url = format!("{}/v1/tasks/{task_id}/{verb}", self.urls[node]);
            let invoke_ns = self.now_ns();
            let sent = send(http.post(&url).json(body)).await;
            let complete_ns = self.now_ns();
            let status = sent.status();
            record.ops.push(Op {
                process: *process,
                f: verb.into(),
                key: format!("task-{task_id}"),
                value: json!({
                    "fencing_token": body["fencing_token"],
                    "request_id": body["request_id"],
                    "answer": sent.body(),
                }),
                status,
                invoke_ns,
                complete_ns: (status != Status::Unknown).then_some(complete_ns),
                node: node as u64 + 1,
            });
            match status {
                Status::Unavailable if attempt < 10 => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Status::Unknown => {
                    *process += self.processes as u64;
                    return (sent, node);
                }
                _ => return (sent, node),
            }
        }
    }
}

// ----- checkers --------------------------------------------------------------------

/// The checks, `no-lost-task` first; `views` is the final read (`None`: it failed).
fn check(record: &Record, views: Option<&[View]>) -> Vec<Check> {
    let Some(views) = views else {
        let mut checks: Vec<Check> = [
            "no-lost-task",
            "no-phantom-task",
            "no-double-completion",
            "completed-state",
        ]
        .iter()
        .map(|name| {
            Check::new(
                name,
                CheckVerdict::Unknown,
                "the final read of the tasks never succeeded".into(),
                Value::Null,
            )
        })
        .collect();
        checks.push(lease_order(&record.claims));
        return checks;
    };
    let by_id: BTreeMap<u64, &View> = views.iter().map(|v| (v.task_id, v)).collect();

    let mut lost = Vec::new();
    for submit in record.submits.iter().filter(|s| s.status == Status::Ok) {
        let Some(task_id) = submit.task_id else {
            lost.push(
                json!({ "payload": submit.payload, "why": "acknowledged without a task_id" }),
            );
            continue;
        };
        match by_id.get(&task_id) {
            None => lost.push(json!({
                "payload": submit.payload, "task_id": task_id, "submit_invoke_ns": submit.invoke_ns,
                "why": "acknowledged, missing from the final read",
            })),
            Some(view) if view.payload.as_deref() != Some(submit.payload.as_str()) => {
                lost.push(json!({
                    "payload": submit.payload, "task_id": task_id,
                    "why": "the task under the acknowledged id has another payload",
                    "stored_payload": view.payload,
                }))
            }
            Some(view)
                if !matches!(
                    view.state.as_str(),
                    "pending" | "queued" | "assigned" | "failed" | "succeeded" | "dead"
                ) =>
            {
                lost.push(json!({
                    "payload": submit.payload, "task_id": task_id,
                    "why": "in a state nobody asked for", "state": view.state,
                }))
            }
            Some(_) => {}
        }
    }
    let lost = Check::from_violations("no-lost-task", "acknowledged tasks lost", lost);

    let submits: BTreeMap<&str, &Submit> = record
        .submits
        .iter()
        .map(|s| (s.payload.as_str(), s))
        .collect();
    let mut phantoms = Vec::new();
    let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
    for view in views {
        let Some(payload) = view.payload.as_deref() else {
            phantoms.push(json!({ "task_id": view.task_id, "why": "no payload id" }));
            continue;
        };
        if let Some(other) = seen.insert(payload, view.task_id) {
            phantoms.push(json!({
                "payload": payload, "task_ids": [other, view.task_id],
                "why": "one payload stored as two tasks",
            }));
        }
        match submits.get(payload) {
            None => phantoms.push(json!({
                "payload": payload, "task_id": view.task_id, "why": "never submitted",
            })),
            Some(submit) if !matches!(submit.status, Status::Ok | Status::Unknown) => phantoms
                .push(json!({
                    "payload": payload, "task_id": view.task_id,
                    "why": "its only submit was refused or never reached the state machine",
                })),
            Some(submit) if submit.task_id.is_some_and(|id| id != view.task_id) => {
                phantoms.push(json!({
                    "payload": payload, "task_id": view.task_id,
                    "why": "stored under another id than the acknowledgement gave",
                    "acknowledged_id": submit.task_id,
                }))
            }
            Some(_) => {}
        }
    }
    let phantom = Check::from_violations("no-phantom-task", "phantom tasks", phantoms);

    let completions: Vec<&Finish> = record
        .finishes
        .iter()
        .filter(|f| f.kind == FinishKind::Complete)
        .collect();
    let mut acked: BTreeMap<u64, BTreeSet<(&str, u64)>> = BTreeMap::new();
    for finish in completions.iter().filter(|f| f.status == Status::Ok) {
        acked
            .entry(finish.task_id)
            .or_default()
            .insert((finish.tag.as_str(), finish.token));
    }
    let mut doubles = Vec::new();
    for (task_id, tags) in &acked {
        if tags.len() > 1 {
            doubles.push(json!({
                "task_id": task_id,
                "why": "acknowledged completions by several assignments",
                "completions": tags.iter().map(|(tag, token)| json!({ "tag": tag, "fencing_token": token })).collect::<Vec<_>>(),
            }));
        }
        let final_token = by_id.get(task_id).and_then(|v| v.token);
        for (tag, token) in tags {
            if final_token.is_some_and(|t| t != *token) {
                doubles.push(json!({
                    "task_id": task_id, "tag": tag, "fencing_token": token,
                    "final_fencing_token": final_token,
                    "why": "acknowledged under a token that is not the task's final one",
                }));
            }
        }
    }
    let double = Check::from_violations("no-double-completion", "double completions", doubles);

    let mut wrong = Vec::new();
    for (task_id, tags) in &acked {
        let view = by_id.get(task_id);
        for (tag, _) in tags {
            let state_ok = view.is_some_and(|v| v.state == "succeeded");
            let result_ok = view.is_some_and(|v| v.result_tag.as_deref() == Some(*tag));
            if !state_ok || !result_ok {
                wrong.push(json!({
                    "task_id": task_id, "tag": tag,
                    "why": "acknowledged as completed, but the final record disagrees",
                    "final_state": view.map(|v| v.state.as_str()),
                    "final_result_tag": view.and_then(|v| v.result_tag.as_deref()),
                }));
            }
        }
    }
    let by_tag: BTreeMap<&str, &Finish> =
        completions.iter().map(|f| (f.tag.as_str(), *f)).collect();
    for view in views.iter().filter(|v| v.state == "succeeded") {
        let Some(tag) = view.result_tag.as_deref() else {
            wrong.push(json!({ "task_id": view.task_id, "why": "succeeded without our result" }));
            continue;
        };
        let why = match by_tag.get(tag) {
            None => "its result is from no completion we sent",
            Some(f) if f.task_id != view.task_id => "its result is another task's completion",
            Some(f) if !matches!(f.status, Status::Ok | Status::Unknown) => {
                "its result is from a completion the server refused or never applied"
            }
            Some(f) if Some(f.token) != view.token => {
                "its result was sent under another fencing token than the final one"
            }
            Some(_) => continue,
        };
        wrong.push(json!({
            "task_id": view.task_id, "tag": tag, "why": why,
            "final_fencing_token": view.token, "attempts": view.attempts,
        }));
    }
    let completed = Check::from_violations("completed-state", "completion mismatches", wrong);

    vec![
        lost,
        phantom,
        double,
        completed,
        lease_order(&record.claims),
    ]
}

/// Tokens of one task: distinct across acknowledged claims, increasing in real time.
fn lease_order(claims: &[Claim]) -> Check {
    let mut by_task: BTreeMap<u64, Vec<&Claim>> = BTreeMap::new();
    for claim in claims {
        by_task.entry(claim.task_id).or_default().push(claim);
    }
    let mut violations = Vec::new();
    for (task_id, claims) in by_task {
        for a in &claims {
            for b in &claims {
                let same = std::ptr::eq(*a, *b);
                let why = if !same && a.token == b.token && a.invoke_ns <= b.invoke_ns {
                    "two claims got the same lease"
                } else if a.complete_ns < b.invoke_ns && b.token <= a.token {
                    "a later claim got an older token"
                } else {
                    continue;
                };
                violations.push(json!({
                    "task_id": task_id, "why": why,
                    "first": { "session": a.session, "fencing_token": a.token, "invoke_ns": a.invoke_ns, "complete_ns": a.complete_ns },
                    "second": { "session": b.session, "fencing_token": b.token, "invoke_ns": b.invoke_ns, "complete_ns": b.complete_ns },
                }));
            }
        }
    }
    Check::from_violations("lease-order", "lease order violations", violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(payload: &str, status: Status, task_id: Option<u64>) -> Submit {
        Submit {
            payload: payload.into(),
            body: Value::Null,
            invoke_ns: 0,
            status,
            task_id,
            node: 0,
        }
    }

    fn claim(task_id: u64, token: u64, invoke: u64, complete: u64) -> Claim {
        Claim {
            task_id,
            token,
            session: 1,
            invoke_ns: invoke,
            complete_ns: complete,
        }
    }

    fn complete(task_id: u64, token: u64, status: Status) -> Finish {
        Finish {
            kind: FinishKind::Complete,
            task_id,
            token,
            tag: format!("done-{task_id}-{token}"),
            body: Value::Null,
            status,
            code: (status == Status::Fail).then(|| "stale_fencing_token".into()),
            stalled: None,
            node: 0,
            invoke_ns: 0,
        }
    }

    fn view(task_id: u64, payload: &str, state: &str, token: u64, tag: Option<&str>) -> View {
        View {
            task_id,
            state: state.into(),
            token: Some(token),
            payload: Some(payload.into()),
            result_tag: tag.map(str::to_owned),
            attempts: 1,
        }
    }

    /// Task 10 completed under token 12 after a stale completion under 11 was
    /// refused; task 20 is still queued; an unknown submit was never applied.
    fn good() -> (Record, Vec<View>) {
        let record = Record {
            submits: vec![
                submit("p1", Status::Ok, Some(10)),
                submit("p2", Status::Ok, Some(20)),
                submit("p3", Status::Unknown, None),
                submit("p4", Status::Unavailable, None),
            ],
            claims: vec![claim(10, 11, 0, 5), claim(10, 12, 10, 15)],
            finishes: vec![complete(10, 11, Status::Fail), complete(10, 12, Status::Ok)],
            ..Record::default()
        };
        let views = vec![
            view(10, "p1", "succeeded", 12, Some("done-10-12")),
            view(20, "p2", "queued", 0, None),
        ];
        (record, views)
    }

    fn verdict(checks: &[Check], name: &str) -> CheckVerdict {
        checks.iter().find(|c| c.name == name).unwrap().verdict
    }

    #[test]
    fn a_correct_history_passes() {
        let (record, views) = good();
        let checks = check(&record, Some(&views));
        for check in &checks {
            assert_eq!(check.verdict, CheckVerdict::Pass, "{check:?}");
        }
        let checks = check(&record, None);
        assert_eq!(verdict(&checks, "no-lost-task"), CheckVerdict::Unknown);
    }

    #[test]
    fn a_lost_or_cancelled_task_is_caught() {
        let (record, mut views) = good();
        views.pop();
        assert_eq!(
            verdict(&check(&record, Some(&views)), "no-lost-task"),
            CheckVerdict::Fail
        );
        let (record, mut views) = good();
        views[1].state = "cancelled".into();
        assert_eq!(
            verdict(&check(&record, Some(&views)), "no-lost-task"),
            CheckVerdict::Fail
        );
    }

    #[test]
    fn phantom_and_duplicate_tasks_are_caught() {
        for extra in ["p9", "p4", "p1"] {
            let (record, mut views) = good();
            views.push(view(30, extra, "queued", 0, None));
            let checks = check(&record, Some(&views));
            assert_eq!(
                verdict(&checks, "no-phantom-task"),
                CheckVerdict::Fail,
                "{extra}"
            );
        }
        // The unknown submit taking effect is fine.
        let (record, mut views) = good();
        views.push(view(30, "p3", "queued", 0, None));
        let checks = check(&record, Some(&views));
        assert_eq!(verdict(&checks, "no-phantom-task"), CheckVerdict::Pass);
    }

    #[test]
    fn a_double_completion_is_caught() {
        let (mut record, views) = good();
        record.finishes[0].status = Status::Ok;
        let checks = check(&record, Some(&views));
        assert_eq!(verdict(&checks, "no-double-completion"), CheckVerdict::Fail);
    }

    #[test]
    fn a_refused_completion_taking_effect_is_caught() {
        let (record, mut views) = good();
        views[0] = view(10, "p1", "succeeded", 11, Some("done-10-11"));
        let checks = check(&record, Some(&views));
        assert_eq!(verdict(&checks, "completed-state"), CheckVerdict::Fail);
        // And an acknowledged completion that did not stick.
        let (record, mut views) = good();
        views[0] = view(10, "p1", "queued", 12, None);
        let checks = check(&record, Some(&views));
        assert_eq!(verdict(&checks, "completed-state"), CheckVerdict::Fail);
    }

    #[test]
    fn leases_out_of_order_are_caught() {
        let (mut record, views) = good();
        record.claims.push(claim(10, 11, 20, 25));
        let checks = check(&record, Some(&views));
        assert_eq!(verdict(&checks, "lease-order"), CheckVerdict::Fail);
        let (mut record, views) = good();
        // Concurrent claims with different tokens are fine.
        record.claims.push(claim(10, 13, 11, 14));
        let checks = check(&record, Some(&views));
        assert_eq!(verdict(&checks, "lease-order"), CheckVerdict::Pass);
    }
}
