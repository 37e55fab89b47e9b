//! The register workload: sequential clients doing linearizable reads, writes and
//! compare-and-sets on a few keys, with unique values, through every node.
//!
//! Outcomes follow the server's contract: 200 is `ok`; a refused CAS (409
//! `cas_mismatch`) is a checkable `fail`; 503 and connection failures before sending
//! are "not applied" (`unavailable`: kept in the generic history, left out of the
//! checked one); 504, timeouts and lost connections are `unknown`, and the client then
//! retires its process id (Jepsen's discipline) and continues under a new one. CAS
//! goes through versions: a client CASes from the (value, version) it last saw, and
//! since every value is written once, "version matches" is "value matches".
//!
//! A write or CAS that gets no definite answer is first **retried in place** with the
//! same `request_id` (the server's documented way to resolve it), on the other nodes
//! in turn, for up to [`RETRY_WINDOW`]: the answer is the original result if the first
//! attempt was applied, or the request applies now. Either way the operation took
//! effect (or was refused) exactly once between its invocation and the retry's
//! answer, so it is recorded as `ok` / `fail` with that completion time. This is what
//! a careful client does, and it keeps intervals short: an operation left `unknown`
//! stays concurrent with everything after it on its key, and every one of them can
//! double the states the checker must visit. A server whose request-id table forgot
//! or double-applied a request would show up as a linearizability violation (values
//! are unique), so retrying does not hide bugs. Only when the window passes without
//! an answer is the operation `unknown` and the process retired; after healing, those
//! are retried once more the same way ([`RESOLVE_ATTEMPTS`]).
//!
//! Keys are **independent** (Jepsen's `independent` keys): every [`OPS_PER_KEY`]
//! operations per key in use, all clients move to a fresh generation of keys, so each
//! key's history — and the checker's search on it — stays small however long the run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{send, watch, Check, CheckVerdict, Context, Op, Sent, Status, WorkloadResult};
use crate::checker::wgl::{self, Verdict};
use crate::history::{Operation, Outcome, RegisterOp};

/// How long the WGL search may spend on one key before answering `unknown`.
const PER_KEY_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the whole check may take; keys not reached by then are `unknown`.
const TOTAL_CHECK_TIMEOUT: Duration = Duration::from_secs(600);
/// Attempts to resolve one indeterminate operation after healing.
const RESOLVE_ATTEMPTS: usize = 20;
/// How long a client keeps retrying a write or CAS without a definite answer (same
/// `request_id`, next node each time) before recording it `unknown`.
const RETRY_WINDOW: Duration = Duration::from_secs(10);
/// Pause between in-place retries (doubling up to [`RETRY_BACKOFF_MAX`]).
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(25);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(400);
/// Operations (attempted, of every kind) per key before all clients move to a fresh
/// generation of keys. Each key's history is then a few hundred operations whatever
/// the run's length: long per-key histories were what blew up the checker (a
/// 30-minute run on 16 keys grew the WGL search past 11 GiB; keys rotated every 20 s
/// still reached 3.9 GiB under the mixed nemesis, and a CI smoke run on a faster
/// machine got 1,600 operations per key and hit the per-key deadline).
const OPS_PER_KEY: u64 = 200;

/// An indeterminate write or CAS, with what is needed to retry it.
struct Pending {
    /// Index in the client's typed history.
    index: usize,
    /// Index in the client's generic history.
    generic: usize,
    url: String,
    body: Value,
}

/// One client's record.
#[derive(Default)]
struct ClientRecord {
    typed: Vec<Operation>,
    generic: Vec<Op>,
    pending: Vec<Pending>,
}

/// Runs the clients (and two watchers of `/v1/watch`, see [`watch`]), resolves
/// indeterminate operations after healing, checks linearizability per key, and
/// checks the watchers' streams against the writes.
pub async fn run(mut context: Context) -> anyhow::Result<WorkloadResult> {
    let watches = [("watch-leader", false), ("watch-follower", true)].map(|(name, follower)| {
        watch::start(
            name,
            context.urls.clone(),
            follower,
            context.seed.wrapping_add(u64::from(follower) + 77),
            context.started,
        )
    });
    let attempted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..context.processes)
        .map(|index| {
            let attempted = attempted.clone();
            let (urls, keys, seed, started, until, processes) = (
                context.urls.clone(),
                context.keys,
                context.seed,
                context.started,
                context.until,
                context.processes,
            );
            let http = context.http();
            tokio::spawn(async move {
                client(
                    index, processes, urls, keys, seed, started, until, http, attempted,
                )
                .await
            })
        })
        .collect();
    let mut records = Vec::new();
    for task in tasks {
        records.push(task.await?);
    }
    context.wait_healed().await;
    let http = context.http();
    let mut typed = Vec::new();
    let mut generic = Vec::new();
    let (mut resolved, mut unresolved) = (0u64, 0u64);
    for mut record in records {
        for pending in &record.pending {
            // Too old: the server may have forgotten the id, so a retry proves nothing.
            if !context.resolvable(record.typed[pending.index].invoke_ns) {
                unresolved += 1;
                continue;
            }
            let mut answer = None;
            let mut version = None;
            for _ in 0..RESOLVE_ATTEMPTS {
                let sent = send(http.put(&pending.url).json(&pending.body)).await;
                match sent {
                    Sent::Answer(200, ref body) => {
                        version = body["version"].as_u64();
                        answer = Some(Outcome::Ok)
                    }
                    Sent::Answer(409, ref body) if body["error"]["code"] == "cas_mismatch" => {
                        answer = Some(Outcome::Fail)
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
                break;
            }
            let op = &mut record.typed[pending.index];
            match answer {
                Some(outcome) => {
                    resolved += 1;
                    op.outcome = outcome;
                    op.complete_ns = Some(context.now_ns());
                    let generic = &mut record.generic[pending.generic];
                    generic.status = if outcome == Outcome::Ok {
                        Status::Ok
                    } else {
                        Status::Fail
                    };
                    generic.complete_ns = op.complete_ns;
                    generic.value["resolved_by_retry"] = Value::Bool(true);
                    if let Some(version) = version {
                        generic.value["version"] = version.into();
                    }
                }
                None => unresolved += 1,
            }
        }
        typed.extend(record.typed);
        generic.extend(record.generic);
    }
    typed.sort_by_key(|op| op.invoke_ns);
    generic.sort_by_key(|op| op.invoke_ns);
    // The watchers go on until they have seen the last acknowledged write (while
    // the linearizability check runs).
    let writes = watch::writes_of(&generic);
    let target = watch::target_of(&writes);
    for watch in &watches {
        watch.finish_at(target);
    }
    let results = wgl::check(&typed, PER_KEY_CHECK_TIMEOUT, TOTAL_CHECK_TIMEOUT);
    let verdict = if results
        .iter()
        .any(|r| matches!(r.verdict, Verdict::NotLinearizable { .. }))
    {
        CheckVerdict::Fail
    } else if results
        .iter()
        .any(|r| matches!(r.verdict, Verdict::Unknown { .. }))
    {
        CheckVerdict::Unknown
    } else {
        CheckVerdict::Pass
    };
    let summary = format!(
        "{} keys, {} checked operations; {resolved} indeterminate operations resolved by same-id retry, {unresolved} left unknown",
        results.len(),
        typed.len()
    );
    let mut checks = vec![Check::new(
        "linearizable",
        verdict,
        summary,
        serde_json::to_value(&results)?,
    )];
    for watch in watches {
        checks.push(watch::check(&watch.join().await, &writes));
    }
    Ok(WorkloadResult {
        ops: generic,
        checks,
    })
}

#[allow(clippy::too_many_arguments)]
async fn client(
    index: usize,
    processes: usize,
    urls: Vec<String>,
    keys: usize,
    seed: u64,
    started: Instant,
    until: Instant,
    http: reqwest::Client,
    attempted: Arc<AtomicU64>,
) -> ClientRecord {
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(index as u64 * 7919));
    let mut process = index as u64;
    let mut sequence = 0i64;
    // What this client last saw of each key: (value, version), None = absent.
    let mut seen: BTreeMap<(u64, usize), Option<(i64, u64)>> = BTreeMap::new();
    let mut record = ClientRecord::default();
    let now_ns = || started.elapsed().as_nanos() as u64;
    while Instant::now() < until {
        let epoch = attempted.fetch_add(1, Ordering::Relaxed) / (OPS_PER_KEY * keys as u64);
        let key_index = rng.gen_range(0..keys);
        let key = (epoch, key_index);
        let key_name = format!("register-{epoch}-{key_index}");
        let node = rng.gen_range(0..urls.len());
        let url = format!("{}/v1/kv/{key_name}", urls[node]);
        sequence += 1;
        let value = (index as i64 + 1) * 1_000_000_000 + sequence;
        let request_id = format!("p{process}-{sequence}");
        let choice = rng.gen_range(0..4);
        let (op, body) = match choice {
            0 | 1 => (RegisterOp::Read { value: None }, None),
            2 => (
                RegisterOp::Write { value },
                Some(json!({ "value": value, "request_id": request_id })),
            ),
            _ => {
                let last = seen.get(&key).copied().flatten();
                let if_version = last.map_or(0, |(_, version)| version);
                (
                    RegisterOp::Cas {
                        expected: last.map(|(v, _)| v),
                        value,
                    },
                    Some(
                        json!({ "value": value, "if_version": if_version, "request_id": request_id }),
                    ),
                )
            }
        };
        let request = match &body {
            None => http.get(&url),
            Some(body) => http.put(&url).json(body),
        };
        let invoke_ns = now_ns();
        let mut sent = send(request).await;
        if let (Some(body), Sent::Answer(504, _) | Sent::Lost) = (&body, &sent) {
            sent = retry_in_place(&http, &urls, node, &key_name, body).await;
        }
        let complete_ns = now_ns();
        let status = sent.status();
        let mut acknowledged_version = None;
        let (op, outcome) = match (op, sent) {
            (RegisterOp::Read { .. }, Sent::Answer(200, body)) => {
                let read = body["value"].as_i64();
                seen.insert(key, read.zip(body["version"].as_u64()));
                (RegisterOp::Read { value: read }, Some(Outcome::Ok))
            }
            (RegisterOp::Read { .. }, Sent::Answer(404, body))
                if body["error"]["code"] == "key_not_found" =>
            {
                seen.insert(key, None);
                (RegisterOp::Read { value: None }, Some(Outcome::Ok))
            }
            (op @ (RegisterOp::Write { .. } | RegisterOp::Cas { .. }), Sent::Answer(200, body)) => {
                acknowledged_version = body["version"].as_u64();
                seen.insert(
                    key,
                    body["version"].as_u64().map(|version| (value, version)),
                );
                (op, Some(Outcome::Ok))
            }
            (op @ RegisterOp::Cas { .. }, Sent::Answer(409, body))
                if body["error"]["code"] == "cas_mismatch" =>
            {
                seen.remove(&key);
                (op, Some(Outcome::Fail))
            }
            // A read that did not answer had no effect and tells nothing.
            (op @ RegisterOp::Read { .. }, _) => (op, None),
            (op, Sent::NeverArrived | Sent::Answer(503 | 429, _)) => (op, None),
            (op, Sent::Answer(504, _) | Sent::Lost) => (op, Some(Outcome::Unknown)),
            (op, Sent::Answer(status, body)) => {
                // Any other answer is a harness or server bug worth seeing in the report.
                eprintln!("process {process}: unexpected {status} for {op:?}: {body}");
                (op, Some(Outcome::Unknown))
            }
        };
        let (f, mut args) = match &op {
            RegisterOp::Read { value } => ("read", json!({ "read": value })),
            RegisterOp::Write { value } => ("write", json!({ "value": value })),
            RegisterOp::Cas { expected, value } => {
                ("cas", json!({ "expected": expected, "value": value }))
            }
        };
        // The command index of the write (the watch checker's `version`).
        if let Some(version) = acknowledged_version {
            args["version"] = version.into();
        }
        let generic_status = match outcome {
            Some(Outcome::Ok) => Status::Ok,
            Some(Outcome::Fail) => Status::Fail,
            Some(Outcome::Unknown) => Status::Unknown,
            None => status,
        };
        record.generic.push(Op {
            process,
            f: f.into(),
            key: key_name.clone(),
            value: args,
            status: generic_status,
            invoke_ns,
            complete_ns: (generic_status != Status::Unknown).then_some(complete_ns),
            node: node as u64 + 1,
        });
        let Some(outcome) = outcome else {
            if generic_status == Status::Unavailable {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            continue;
        };
        if outcome == Outcome::Unknown {
            if let Some(body) = body {
                record.pending.push(Pending {
                    index: record.typed.len(),
                    generic: record.generic.len() - 1,
                    url: url.clone(),
                    body,
                });
            }
        }
        record.typed.push(Operation {
            process,
            key: key_name.clone(),
            op,
            outcome,
            invoke_ns,
            complete_ns: (outcome != Outcome::Unknown).then_some(complete_ns),
            node: node as u64 + 1,
        });
        if outcome == Outcome::Unknown {
            // Retire the process: its next operation must not look concurrent-free.
            process += processes as u64;
            seen.clear();
        }
    }
    record
}

/// Retries a write or CAS that got no definite answer with the same body (so the
/// same `request_id`) on the next node each time, until it is answered `200` or
/// `409 cas_mismatch` (the outcome of the one application) or [`RETRY_WINDOW`] passes.
/// Returns the definite answer, or `Sent::Lost` if there was none.
async fn retry_in_place(
    http: &reqwest::Client,
    urls: &[String],
    first_node: usize,
    key_name: &str,
    body: &Value,
) -> Sent {
    let deadline = Instant::now() + RETRY_WINDOW;
    let mut backoff = RETRY_BACKOFF_MIN;
    let mut node = first_node;
    while Instant::now() + backoff < deadline {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        node = (node + 1) % urls.len();
        let url = format!("{}/v1/kv/{key_name}", urls[node]);
        match send(http.put(&url).json(body)).await {
            sent @ Sent::Answer(200, _) => return sent,
            Sent::Answer(409, body) if body["error"]["code"] == "cas_mismatch" => {
                return Sent::Answer(409, body)
            }
            // Not applied by this attempt (503, 429, never sent) or still unknown
            // (504, lost): the first attempt may yet be applied; ask again.
            Sent::NeverArrived | Sent::Lost | Sent::Answer(503 | 504 | 429, _) => {}
            Sent::Answer(status, body) => {
                eprintln!("register retry: unexpected {status}: {body}");
                return Sent::Lost;
            }
        }
    }
    Sent::Lost
}
