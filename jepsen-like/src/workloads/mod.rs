//! Workloads: sequential clients against the cluster, each recording what it did as
//! [`Op`]s and judging it with its own checkers into [`Check`]s.
//!
//! Every workload is one async function `run(Context) -> WorkloadResult`: its
//! clients work until `Context::until` (while the nemesis injects faults), then it
//! waits for [`Context::healed`] (faults healed and a leader acknowledged a write),
//! does its final reads and resolutions, and runs its checkers. Adding a workload
//! (2PC / bank, proposals, membership…) is a module with such a function and a
//! variant of [`Workload`]; `run.rs` needs no change.
//!
//! Outcome discipline shared by all clients: 2xx is `ok`; a definite refusal by the
//! state machine (4xx) is `fail`; 503 / 429 / a refused connection never reached the
//! state machine and is `unavailable` (kept for the timeline and the counts,
//! ignored by checkers); 504, timeouts and lost connections are `unknown`: maybe
//! applied, never assumed absent.

pub mod bank;
pub mod barrier;
pub mod decisions;
pub mod lock;
pub mod proposals;
pub mod register;
pub mod semaphore;
pub mod session;
pub mod set;
pub mod tasks;
pub mod twophase;
pub mod watch;

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

/// The workloads the harness can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Linearizable read / write / CAS on a few keys (WGL checker).
    Register,
    /// Unique elements added to a set; none acknowledged may be lost.
    Set,
    /// Lock holders update a resource that refuses lower fencing tokens.
    Lock,
    /// The lock workload with the resource ignoring tokens: must show violations.
    LockUnfenced,
    /// Weighted permits; holders never exceed the limit.
    Semaphore,
    /// Barrier generations; nobody is released before everyone arrived.
    Barrier,
    /// Task queue: no acknowledged task lost, no double completion.
    Tasks,
    /// Transfers between accounts through `/v1/txn`: the total never changes.
    Bank,
    /// Two-phase commit: one decision per transaction, committed only if all voted
    /// commit.
    #[value(name = "2pc")]
    TwoPhase,
    /// Quorum proposals: a decision never changes and matches its tally.
    Proposals,
    /// `bank`, `2pc` and `proposals` together.
    Decisions,
    /// `register` and the decision workloads together: the smoke tier's cell that
    /// covers them (shared cells keep CI short).
    #[value(name = "register+decisions")]
    RegisterDecisions,
    /// Every workload above except `lock-unfenced`, at once on one cluster, each
    /// with its own clients; checks are prefixed with the workload's name.
    All,
}

/// The workloads `All` runs together.
pub const ALL: [Workload; 9] = [
    Workload::Register,
    Workload::Set,
    Workload::Lock,
    Workload::Semaphore,
    Workload::Barrier,
    Workload::Tasks,
    Workload::Bank,
    Workload::TwoPhase,
    Workload::Proposals,
];

/// The workloads `Decisions` runs together.
pub const DECISIONS: [Workload; 3] = [Workload::Bank, Workload::TwoPhase, Workload::Proposals];

/// The workloads `RegisterDecisions` runs together.
pub const REGISTER_DECISIONS: [Workload; 4] = [
    Workload::Register,
    Workload::Bank,
    Workload::TwoPhase,
    Workload::Proposals,
];

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::Lock => "lock",
            Workload::LockUnfenced => "lock-unfenced",
            Workload::Semaphore => "semaphore",
            Workload::Barrier => "barrier",
            Workload::Tasks => "tasks",
            Workload::Bank => "bank",
            Workload::TwoPhase => "2pc",
            Workload::Proposals => "proposals",
            Workload::Decisions => "decisions",
            Workload::RegisterDecisions => "register+decisions",
            Workload::All => "all",
        }
    }
}

/// What a workload gets to run with.
pub struct Context {
    /// Base URLs of every node (clients spread over them).
    pub urls: Vec<String>,
    /// Concurrent sequential clients.
    pub processes: usize,
    /// Keys / resources to spread over (workloads may ignore it).
    pub keys: usize,
    pub seed: u64,
    /// The run's clock origin: every `*_ns` is measured from here.
    pub started: Instant,
    /// Clients stop starting operations at this instant.
    pub until: Instant,
    /// Becomes `true` once the cluster is healed and a leader acknowledged a write.
    pub healed: tokio::sync::watch::Receiver<bool>,
}

/// How long after an indeterminate operation's invocation a same-`request_id` retry
/// still proves its outcome. The server remembers an id for 10 minutes of cluster
/// time and keeps at most the newest 100,000 (docs/api.md, "Idempotency"); a retry
/// after the id is forgotten is evaluated afresh, and its answer (e.g. `409
/// wrong_state` for completing a task the original attempt already completed) says
/// nothing about the original. Well inside both bounds at the harness's write rates
/// (a few hundred ids per second); older operations are left `unknown`. A 30-minute
/// run that resolved everything after healing reported 28 false "completion refused"
/// anomalies this way.
pub const RESOLVE_TRUST: Duration = Duration::from_secs(120);

impl Context {
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Whether an operation invoked at `invoke_ns` may still be resolved by a
    /// same-`request_id` retry ([`RESOLVE_TRUST`]).
    pub fn resolvable(&self, invoke_ns: u64) -> bool {
        self.now_ns().saturating_sub(invoke_ns) < RESOLVE_TRUST.as_nanos() as u64
    }

    /// Waits until the run says the cluster is healed (or the run gave up on it).
    pub async fn wait_healed(&mut self) {
        let _ = self.healed.wait_for(|healed| *healed).await;
    }

    /// An HTTP client with the harness's per-request timeout.
    pub fn http(&self) -> reqwest::Client {
        http_client(Duration::from_secs(2))
    }
}

pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        // Under the server's keep-alive idle timeout (`header_read_timeout_ms`, 30 s),
        // so a pooled connection is never reused just as the server closes it.
        .pool_idle_timeout(std::time::Duration::from_secs(10))
        .default_headers(crate::cluster::auth_headers())
        .timeout(timeout)
        .build()
        .expect("http client")
}

/// How one client operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Fail,
    Unknown,
    /// Never reached the state machine (503, 429, refused connection): no effect.
    Unavailable,
}

/// One client operation, in the generic form every workload reports (history.jsonl,
/// counts, timeline).
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub process: u64,
    /// What it did: `read`, `write`, `cas`, `acquire`, `release`, `add`, `submit`…
    pub f: String,
    /// The key / resource it touched.
    pub key: String,
    /// Arguments and results, workload-specific.
    pub value: Value,
    pub status: Status,
    /// Nanoseconds since the run started.
    pub invoke_ns: u64,
    /// `None` when the outcome is unknown.
    pub complete_ns: Option<u64>,
    /// The node (1-based) the client sent it to; 0 when not one node.
    pub node: u64,
}

/// A checker's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckVerdict {
    Pass,
    Fail,
    /// Could not decide (e.g. the search timed out): never a pass.
    Unknown,
}

/// One checker's judgement of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// e.g. `linearizable`, `no-lost-element`, `mutual-exclusion`.
    pub name: String,
    pub verdict: CheckVerdict,
    /// One line for humans.
    pub summary: String,
    /// Evidence: counterexamples, per-key results, counts.
    pub detail: Value,
}

impl Check {
    pub fn new(name: &str, verdict: CheckVerdict, summary: String, detail: Value) -> Check {
        Check {
            name: name.into(),
            verdict,
            summary,
            detail,
        }
    }

    /// Pass when `violations` is empty, else fail with them as evidence.
    pub fn from_violations(name: &str, what: &str, violations: Vec<Value>) -> Check {
        if violations.is_empty() {
            Check::new(name, CheckVerdict::Pass, format!("no {what}"), Value::Null)
        } else {
            let summary = format!("{} {what}", violations.len());
            let shown: Vec<Value> = violations.into_iter().take(20).collect();
            Check::new(name, CheckVerdict::Fail, summary, Value::Array(shown))
        }
    }
}

/// What a workload returns.
#[derive(Debug, Default)]
pub struct WorkloadResult {
    /// Every operation, including final reads after healing.
    pub ops: Vec<Op>,
    pub checks: Vec<Check>,
}

/// Runs `workload` to completion (clients, final reads, checks).
pub async fn run(workload: Workload, context: Context) -> anyhow::Result<WorkloadResult> {
    match workload {
        Workload::All => run_together(&ALL, context).await,
        Workload::Decisions => run_together(&DECISIONS, context).await,
        Workload::RegisterDecisions => run_together(&REGISTER_DECISIONS, context).await,
        single => run_one(single, context).await,
    }
}

/// One workload that is not a group (groups are not recursive).
async fn run_one(workload: Workload, context: Context) -> anyhow::Result<WorkloadResult> {
    match workload {
        Workload::Register => register::run(context).await,
        Workload::Set => set::run(context).await,
        Workload::Lock => lock::run(context, true).await,
        Workload::LockUnfenced => lock::run(context, false).await,
        Workload::Semaphore => semaphore::run(context).await,
        Workload::Barrier => barrier::run(context).await,
        Workload::Tasks => tasks::run(context).await,
        Workload::Bank => bank::run(context).await,
        Workload::TwoPhase => twophase::run(context).await,
        Workload::Proposals => proposals::run(context).await,
        Workload::Decisions | Workload::RegisterDecisions | Workload::All => {
            anyhow::bail!("a group of workloads cannot contain a group")
        }
    }
}

/// Runs `group` concurrently, each with `processes` clients and a seed of its own,
/// and merges their operations and checks.
async fn run_together(group: &[Workload], context: Context) -> anyhow::Result<WorkloadResult> {
    let mut handles = Vec::new();
    for (i, &workload) in group.iter().enumerate() {
        let sub = Context {
            urls: context.urls.clone(),
            processes: context.processes,
            keys: context.keys,
            seed: context.seed.wrapping_add(i as u64 * 1_000_003),
            started: context.started,
            until: context.until,
            healed: context.healed.clone(),
        };
        handles.push((workload, tokio::spawn(run_one(workload, sub))));
    }
    let mut merged = WorkloadResult::default();
    for (workload, handle) in handles {
        let result = handle.await??;
        merged.ops.extend(result.ops.into_iter().map(|mut op| {
            op.key = format!("{}:{}", workload.name(), op.key);
            op
        }));
        merged
            .checks
            .extend(result.checks.into_iter().map(|mut check| {
                check.name = format!("{}/{}", workload.name(), check.name);
                check
            }));
    }
    merged.ops.sort_by_key(|op| op.invoke_ns);
    Ok(merged)
}

/// What came back for one request.
#[derive(Debug)]
pub enum Sent {
    /// The server answered with this status and JSON body (`Null` when empty).
    Answer(u16, Value),
    /// Never reached the server (connection refused).
    NeverArrived,
    /// Sent, but no (complete) answer came back: maybe applied.
    Lost,
}

impl Sent {
    /// The shared outcome discipline: 2xx ok, 503/429/refused unavailable,
    /// 504/lost unknown, any other 4xx a definite `fail`.
    pub fn status(&self) -> Status {
        match self {
            Sent::Answer(200..=299, _) => Status::Ok,
            Sent::Answer(503 | 429, _) | Sent::NeverArrived => Status::Unavailable,
            Sent::Answer(504, _) | Sent::Lost => Status::Unknown,
            Sent::Answer(400..=499, _) => Status::Fail,
            Sent::Answer(_, _) => Status::Unknown,
        }
    }

    /// The error code of a refusal, if any.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Sent::Answer(_, body) => body["error"]["code"].as_str(),
            _ => None,
        }
    }

    pub fn body(&self) -> &Value {
        match self {
            Sent::Answer(_, body) => body,
            _ => &Value::Null,
        }
    }
}

/// Sends one request and classifies what came back.
pub async fn send(request: reqwest::RequestBuilder) -> Sent {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(bytes) if bytes.is_empty() => Sent::Answer(status, Value::Null),
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(body) => Sent::Answer(status, body),
                    Err(_) => Sent::Answer(
                        status,
                        Value::String(String::from_utf8_lossy(&bytes).into()),
                    ),
                },
                Err(_) => Sent::Lost,
            }
        }
        Err(e) if e.is_connect() => Sent::NeverArrived,
        Err(_) => Sent::Lost,
    }
}
