//! The set workload: clients add unique elements to one grow-only set while the
//! nemesis injects faults, and now and then read the whole set.
//!
//! Representation: element `e` is the key `set/e`, written by
//! `PUT /v1/kv/set/e {"value": "e", "request_id": "add-e"}`; a read of the set is a
//! linearizable `GET /v1/kv?prefix=set/`, paged with `after` / `next_after` (the list
//! is capped at 1000 keys a page). Each element is added once, so it is present
//! exactly when its one add took effect. Outcomes follow `workloads/mod.rs`: a `200`
//! is an acknowledged add; `503` / `429` / a refused connection had no effect; `504`,
//! timeouts and lost answers are `unknown` (maybe applied, never assumed absent: the
//! client retires its process id and goes on under a new one).
//!
//! After healing: a first final read records which `unknown` adds are present or
//! absent (reported as counts), then every `unknown` add is resolved by retrying it
//! with its `request_id` (the server answers the original result, or applies it
//! now: either way it is in the set by the time of the answer, so it becomes an
//! acknowledged add completing then), and a second final read follows.
//!
//! How the checkers reason (elements are never removed, so the set only grows):
//!
//! - **`no-lost-element`**: every acknowledged add (resolved ones included) is in
//!   the last final read, which began after all of them completed.
//! - **`no-phantom`**: every element any read returned was added by an add that may
//!   have taken effect (`ok` or `unknown`) and was invoked before that read
//!   completed. An element whose only add was answered `503` / `429` / refused is a
//!   phantom too: the contract says those were not applied.
//! - **`linearizable-reads`**: a read (every page of it starts after the read was
//!   invoked, and elements only accumulate, so a paged read behaves as one read
//!   within its interval) must contain every add acknowledged before it was invoked,
//!   and every element returned by a read that completed before it was invoked (no
//!   element is seen and then gone).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{send, Check, CheckVerdict, Context, Op, Sent, Status, WorkloadResult};

const PREFIX: &str = "set/";
/// Page size of a set read (the server's maximum).
const PAGE: usize = 1000;
/// About one operation in this many is a read of the whole set while the set is
/// small (see [`ELEMENTS_READ_PER_OP`]).
const READ_ONE_IN: u32 = 12;
/// Reads keep every element they returned for the checkers, so their cost grows with
/// the set: beyond this many elements, reads become rarer in proportion, keeping the
/// elements read (and held in memory) per operation bounded. Without it a 30-minute
/// run held tens of GiB of read results (the harness was OOM-killed at 24 GiB).
const ELEMENTS_READ_PER_OP: usize = 40;
/// Attempts to resolve one indeterminate add after healing.
const RESOLVE_ATTEMPTS: usize = 20;
/// Attempts at each final read after healing.
const FINAL_READ_ATTEMPTS: usize = 30;

/// One add of one element.
#[derive(Debug, Clone)]
struct Add {
    element: String,
    invoke_ns: u64,
    /// When it was acknowledged (for a resolved add: when the retry was answered).
    complete_ns: Option<u64>,
    status: Status,
    node: usize,
}

/// One successful read of the whole set.
#[derive(Debug, Clone)]
struct Read {
    invoke_ns: u64,
    complete_ns: u64,
    elements: BTreeSet<String>,
    /// Which read this is: `during run`, `final (before resolving)`, `final`.
    phase: &'static str,
}

/// What a read could not do.
struct ReadFailed(Status);

/// Reads the whole set through `base`, page by page.
async fn read_set(http: &reqwest::Client, base: &str) -> Result<BTreeSet<String>, ReadFailed> {
    let mut elements = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let limit = PAGE.to_string();
        let mut query = vec![("prefix", PREFIX), ("limit", limit.as_str())];
        if let Some(after) = &after {
            query.push(("after", after.as_str()));
        }
        let sent = send(http.get(format!("{base}/v1/kv")).query(&query)).await;
        let Sent::Answer(200, body) = sent else {
            return Err(ReadFailed(match sent.status() {
                Status::Unavailable => Status::Unavailable,
                _ => Status::Fail,
            }));
        };
        let Some(items) = body["items"].as_array() else {
            eprintln!("set: unexpected list answer {body}");
            return Err(ReadFailed(Status::Fail));
        };
        for item in items {
            if let Some(key) = item["key"].as_str() {
                elements.insert(key.strip_prefix(PREFIX).unwrap_or(key).to_owned());
            }
        }
        match body["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return Ok(elements),
        }
    }
}

struct Client {
    index: usize,
    processes: usize,
    urls: Vec<String>,
    seed: u64,
    started: Instant,
    until: Instant,
    http: reqwest::Client,
}

/// Runs the clients, resolves indeterminate adds after healing, and checks.
pub async fn run(mut context: Context) -> anyhow::Result<WorkloadResult> {
    let handles: Vec<_> = (0..context.processes)
        .map(|index| {
            let client = Client {
                index,
                processes: context.processes,
                urls: context.urls.clone(),
                seed: context.seed,
                started: context.started,
                until: context.until,
                http: context.http(),
            };
            tokio::spawn(client.run())
        })
        .collect();
    let mut adds = Vec::new();
    let mut reads = Vec::new();
    let mut ops = Vec::new();
    for handle in handles {
        let (client_adds, client_reads, client_ops) = handle.await?;
        adds.extend(client_adds);
        reads.extend(client_reads);
        ops.extend(client_ops);
    }
    context.wait_healed().await;
    let http = context.http();

    // What the unknown adds look like before anyone retries them.
    let before = final_read(&context, &http, "final (before resolving)", &mut ops).await;
    let mut unknown_present = 0u64;
    let mut unknown_absent = 0u64;
    if let Some(read) = &before {
        for add in adds.iter().filter(|a| a.status == Status::Unknown) {
            if read.elements.contains(&add.element) {
                unknown_present += 1;
            } else {
                unknown_absent += 1;
            }
        }
        reads.push(read.clone());
    }

    let (mut resolved, mut unresolved) = (0u64, 0u64);
    for add in adds.iter_mut().filter(|a| a.status == Status::Unknown) {
        // Too old: the server may have forgotten the id, so a retry proves nothing.
        if !context.resolvable(add.invoke_ns) {
            unresolved += 1;
            continue;
        }
        let mut answer = None;
        for attempt in 0..RESOLVE_ATTEMPTS {
            let node = (add.node + attempt + 1) % context.urls.len();
            let url = format!("{}/v1/kv/{PREFIX}{}", context.urls[node], add.element);
            let body = json!({ "value": add.element, "request_id": request_id(&add.element) });
            let invoke_ns = context.now_ns();
            let sent = send(http.put(&url).json(&body)).await;
            let status = sent.status();
            ops.push(Op {
                process: u64::MAX,
                f: "resolve-add".into(),
                key: "set".into(),
                value: json!({ "element": add.element, "answer": sent.body() }),
                status,
                invoke_ns,
                complete_ns: (status != Status::Unknown).then(|| context.now_ns()),
                node: node as u64 + 1,
            });
            match status {
                Status::Ok | Status::Fail => {
                    answer = Some(status);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        match answer {
            Some(Status::Ok) => {
                resolved += 1;
                add.status = Status::Ok;
                add.complete_ns = Some(context.now_ns());
            }
            // A refused retry (e.g. the id bound to something else) resolves nothing.
            _ => unresolved += 1,
        }
    }

    let last = final_read(&context, &http, "final", &mut ops).await;
    if let Some(read) = &last {
        reads.push(read.clone());
    }
    ops.sort_by_key(|op| op.invoke_ns);
    let mut checks = check(&adds, &reads, last.as_ref());
    checks[0].detail = json!({
        "adds": adds.len(),
        "acknowledged": adds.iter().filter(|a| a.status == Status::Ok).count(),
        "unknown_present_before_resolving": unknown_present,
        "unknown_absent_before_resolving": unknown_absent,
        "unknown_resolved_by_same_id_retry": resolved,
        "unknown_left_unresolved": unresolved,
        "final_size": last.as_ref().map(|r| r.elements.len()),
        "reads": reads.len(),
        "violations": checks[0].detail,
    });
    Ok(WorkloadResult { ops, checks })
}

fn request_id(element: &str) -> String {
    format!("add-{element}")
}

/// A read of the whole set after healing, retried until it succeeds.
async fn final_read(
    context: &Context,
    http: &reqwest::Client,
    phase: &'static str,
    ops: &mut Vec<Op>,
) -> Option<Read> {
    for attempt in 0..FINAL_READ_ATTEMPTS {
        let node = attempt % context.urls.len();
        let invoke_ns = context.now_ns();
        let result = read_set(http, &context.urls[node]).await;
        let complete_ns = context.now_ns();
        let (status, size) = match &result {
            Ok(elements) => (Status::Ok, Some(elements.len())),
            Err(ReadFailed(status)) => (*status, None),
        };
        ops.push(Op {
            process: u64::MAX,
            f: "read".into(),
            key: "set".into(),
            value: json!({ "phase": phase, "size": size }),
            status,
            invoke_ns,
            complete_ns: Some(complete_ns),
            node: node as u64 + 1,
        });
        if let Ok(elements) = result {
            return Some(Read {
                invoke_ns,
                complete_ns,
                elements,
                phase,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

impl Client {
    async fn run(self) -> (Vec<Add>, Vec<Read>, Vec<Op>) {
        let mut rng = SmallRng::seed_from_u64(self.seed.wrapping_add(self.index as u64 * 7919));
        let mut process = self.index as u64;
        let (mut adds, mut reads, mut ops) = (Vec::new(), Vec::new(), Vec::new());
        let now_ns = || self.started.elapsed().as_nanos() as u64;
        let mut sequence = 0u64;
        // Size of the set at this client's last successful read.
        let mut last_size = 0usize;
        while Instant::now() < self.until {
            let node = rng.gen_range(0..self.urls.len());
            let read_probability = (1.0 / f64::from(READ_ONE_IN))
                .min(ELEMENTS_READ_PER_OP as f64 / last_size.max(1) as f64);
            if rng.gen_bool(read_probability) {
                let invoke_ns = now_ns();
                let result = read_set(&self.http, &self.urls[node]).await;
                let complete_ns = now_ns();
                let (status, size) = match &result {
                    Ok(elements) => {
                        last_size = elements.len();
                        (Status::Ok, Some(elements.len()))
                    }
                    Err(ReadFailed(status)) => (*status, None),
                };
                ops.push(Op {
                    process,
                    f: "read".into(),
                    key: "set".into(),
                    value: json!({ "size": size }),
                    status,
                    invoke_ns,
                    complete_ns: Some(complete_ns),
                    node: node as u64 + 1,
                });
                match result {
                    Ok(elements) => reads.push(Read {
                        invoke_ns,
                        complete_ns,
                        elements,
                        phase: "during run",
                    }),
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
                continue;
            }
            sequence += 1;
            let element = format!("e{}-{sequence}", self.index);
            let url = format!("{}/v1/kv/{PREFIX}{element}", self.urls[node]);
            let body = json!({ "value": element, "request_id": request_id(&element) });
            let invoke_ns = now_ns();
            let sent = send(self.http.put(&url).json(&body)).await;
            let complete_ns = now_ns();
            let status = sent.status();
            if let Sent::Answer(400..=499, body) = &sent {
                eprintln!("set: add of {element} refused: {body}");
            }
            ops.push(Op {
                process,
                f: "add".into(),
                key: "set".into(),
                value: json!({ "element": element }),
                status,
                invoke_ns,
                complete_ns: (status != Status::Unknown).then_some(complete_ns),
                node: node as u64 + 1,
            });
            adds.push(Add {
                element,
                invoke_ns,
                complete_ns: (status == Status::Ok).then_some(complete_ns),
                status,
                node,
            });
            match status {
                Status::Unknown => process += self.processes as u64,
                Status::Unavailable | Status::Fail => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Status::Ok => {}
            }
        }
        (adds, reads, ops)
    }
}

/// The three checks, in the order `no-lost-element`, `no-phantom`,
/// `linearizable-reads`; `last` is the final read (`None`: it never succeeded).
fn check(adds: &[Add], reads: &[Read], last: Option<&Read>) -> Vec<Check> {
    let lost = match last {
        None => Check::new(
            "no-lost-element",
            CheckVerdict::Unknown,
            "the final read never succeeded".into(),
            Value::Null,
        ),
        Some(last) => {
            let lost: Vec<Value> = adds
                .iter()
                .filter(|a| a.status == Status::Ok && !last.elements.contains(&a.element))
                .map(|a| {
                    json!({
                        "element": a.element,
                        "invoke_ns": a.invoke_ns,
                        "acknowledged_ns": a.complete_ns,
                        "final_read_invoke_ns": last.invoke_ns,
                    })
                })
                .collect();
            Check::from_violations("no-lost-element", "acknowledged elements lost", lost)
        }
    };

    let by_element: BTreeMap<&str, &Add> = adds.iter().map(|a| (a.element.as_str(), a)).collect();
    let mut phantoms = Vec::new();
    let mut reported = BTreeSet::new();
    for read in reads {
        for element in &read.elements {
            let why = match by_element.get(element.as_str()) {
                None => "never added",
                Some(add) if add.invoke_ns > read.complete_ns => "read before it was added",
                Some(add) if !matches!(add.status, Status::Ok | Status::Unknown) => {
                    "its only add was refused or never reached the state machine"
                }
                Some(_) => continue,
            };
            if reported.insert(element.as_str()) {
                phantoms.push(json!({
                    "element": element,
                    "why": why,
                    "read": read.phase,
                    "read_complete_ns": read.complete_ns,
                }));
            }
        }
    }
    let phantom = Check::from_violations("no-phantom", "phantom elements", phantoms);

    // Acknowledged adds by completion, reads by completion and by invocation.
    let mut acked: Vec<(u64, &str)> = adds
        .iter()
        .filter(|a| a.status == Status::Ok)
        .filter_map(|a| Some((a.complete_ns?, a.element.as_str())))
        .collect();
    acked.sort();
    let mut by_complete: Vec<&Read> = reads.iter().collect();
    by_complete.sort_by_key(|r| r.complete_ns);
    let mut by_invoke: Vec<&Read> = reads.iter().collect();
    by_invoke.sort_by_key(|r| r.invoke_ns);
    // Everything that must be visible from then on, with why.
    let mut required: BTreeMap<&str, String> = BTreeMap::new();
    let (mut next_ack, mut next_read) = (0, 0);
    let mut stale = Vec::new();
    for read in by_invoke {
        while next_ack < acked.len() && acked[next_ack].0 < read.invoke_ns {
            let (ns, element) = acked[next_ack];
            required
                .entry(element)
                .or_insert_with(|| format!("add acknowledged at {ns} ns"));
            next_ack += 1;
        }
        while next_read < by_complete.len() && by_complete[next_read].complete_ns < read.invoke_ns {
            let earlier = by_complete[next_read];
            for element in &earlier.elements {
                required.entry(element.as_str()).or_insert_with(|| {
                    format!(
                        "returned by a {} read that completed at {} ns",
                        earlier.phase, earlier.complete_ns
                    )
                });
            }
            next_read += 1;
        }
        let missing: Vec<Value> = required
            .iter()
            .filter(|(element, _)| !read.elements.contains(**element))
            .take(5)
            .map(|(element, why)| json!({ "element": element, "required_because": why }))
            .collect();
        if !missing.is_empty() {
            stale.push(json!({
                "read": read.phase,
                "invoke_ns": read.invoke_ns,
                "complete_ns": read.complete_ns,
                "missing": missing,
            }));
        }
    }
    let linearizable = Check::from_violations("linearizable-reads", "stale reads", stale);
    vec![lost, phantom, linearizable]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(element: &str, invoke: u64, complete: Option<u64>, status: Status) -> Add {
        Add {
            element: element.into(),
            invoke_ns: invoke,
            complete_ns: complete,
            status,
            node: 0,
        }
    }

    fn read(invoke: u64, complete: u64, elements: &[&str]) -> Read {
        Read {
            invoke_ns: invoke,
            complete_ns: complete,
            elements: elements.iter().map(|e| e.to_string()).collect(),
            phase: "during run",
        }
    }

    fn verdicts(checks: &[Check]) -> Vec<CheckVerdict> {
        checks.iter().map(|c| c.verdict).collect()
    }

    fn adds() -> Vec<Add> {
        vec![
            add("a", 0, Some(10), Status::Ok),
            add("b", 5, None, Status::Unknown),
            add("c", 20, Some(30), Status::Ok),
            add("d", 40, Some(45), Status::Unavailable),
        ]
    }

    #[test]
    fn a_correct_history_passes() {
        // "b" (unknown) may show up or not; "c" is concurrent with the first read.
        let reads = vec![read(15, 25, &["a"]), read(26, 35, &["a", "b", "c"])];
        let last = read(50, 60, &["a", "b", "c"]);
        let checks = check(&adds(), &reads, Some(&last));
        assert_eq!(verdicts(&checks), vec![CheckVerdict::Pass; 3]);
    }

    #[test]
    fn a_lost_element_is_caught() {
        let last = read(50, 60, &["a", "b"]);
        let checks = check(&adds(), std::slice::from_ref(&last), Some(&last));
        assert_eq!(checks[0].verdict, CheckVerdict::Fail);
        let checks = check(&adds(), &[], None);
        assert_eq!(checks[0].verdict, CheckVerdict::Unknown);
    }

    #[test]
    fn phantoms_are_caught() {
        for elements in [&["a", "c", "z"][..], &["a", "c", "d"][..]] {
            let last = read(50, 60, elements);
            let checks = check(&adds(), std::slice::from_ref(&last), Some(&last));
            assert_eq!(checks[1].verdict, CheckVerdict::Fail, "{elements:?}");
        }
        // Seen before its add was even invoked.
        let early = read(1, 2, &["c"]);
        let last = read(50, 60, &["a", "c"]);
        let checks = check(&adds(), &[early, last.clone()], Some(&last));
        assert_eq!(checks[1].verdict, CheckVerdict::Fail);
    }

    #[test]
    fn stale_and_vanishing_reads_are_caught() {
        let last = read(50, 60, &["a", "b", "c"]);
        // Invoked after "c" was acknowledged, but without it.
        let stale = vec![read(31, 35, &["a"]), last.clone()];
        let checks = check(&adds(), &stale, Some(&last));
        assert_eq!(checks[2].verdict, CheckVerdict::Fail);
        // "b" was seen, then gone.
        let vanishing = vec![
            read(11, 12, &["a", "b"]),
            read(13, 14, &["a"]),
            last.clone(),
        ];
        let checks = check(&adds(), &vanishing, Some(&last));
        assert_eq!(checks[2].verdict, CheckVerdict::Fail);
    }
}
