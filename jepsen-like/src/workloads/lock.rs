//! The lock workloads, `lock` and `lock-unfenced`: Kleppmann's "lock with a fenced
//! resource". Also what the semaphore workload shares with it: [`release`],
//! [`observe`], [`await_idle`], [`PendingHold`], [`valid_holds`], [`local_op`]. The
//! session client itself ([`Client`]) is `session.rs`'s.
//!
//! **Clients.** Each of `processes` sequential clients owns a session (TTL
//! [`TTL_MS`], `capacity: 0`) kept alive by a background task (`session.rs`,
//! `Keepalive::Confirmed`): a keepalive every TTL/4 and, 250 ms later (past the
//! leader's 200 ms flush), a linearizable read of the session that confirms which
//! renewals reached the log (see `checker::lease`); the read goes on during a stall
//! (it is the harness observing, and renews nothing). The client loops: acquire
//! one of at most two locks with a bounded `wait_ms`; on a grant, run a
//! read-modify-write of that lock's [`FencedResource`] (read the counter, sleep a
//! little, write counter + 1, both carrying the fencing token); release with the
//! token. One section in
//! [`STALL_ONE_IN`] stalls for [`STALL`] between its read and its write, longer than
//! the TTL, with its keepalives stopped too (a GC pause of the whole client): the
//! server expires the session and grants the lock to a waiter while the stalled
//! client still believes it holds it. Its release afterwards is refused (a `fail`,
//! expected).
//!
//! **The fenced resource** stands for an external storage service, one per lock,
//! in this process. In `lock` it refuses any read or write whose token is lower than
//! the highest it has seen; in `lock-unfenced` it accepts everything. Reads are
//! fenced too, not only writes: with a write-only fence a stalled holder (token 10)
//! that read the counter, then wrote after the next holder (token 20) had *read* but
//! not yet written, would be accepted, and the next holder's write would then
//! overwrite it (a lost update through a correct server). Registering the token at
//! the read closes that window, as a conditional write would.
//!
//! **Outcomes** follow `workloads/mod.rs`. An acquire that ended `unknown` (504,
//! timeout, lost answer) may have been granted: the client does not count itself a
//! holder, ends that session (best effort) and continues under a new process id and
//! a new session; the same for a release that ended unknown. A `503` on a waiting
//! acquire may leave the waiter queued (docs/api.md, blocking waits), so the client
//! retries the *same* lock with the same session, which resumes that waiter.
//!
//! **Checkers** (`checker::lease`):
//! - `fenced-resource`: the writes each resource accepted, in acceptance order, carry
//!   non-decreasing tokens and never lose an update. Must pass in `lock`; in
//!   `lock-unfenced` a stalled section that was overtaken writes a stale counter, so
//!   it must fail (proof the checker sees overlapping sections).
//! - `token-order`: tokens of acknowledged grants of one lock are unique, and
//!   increase in real-time order: a grant acknowledged before another's *first*
//!   attempt was invoked has the smaller token (the first attempt of a chain of 503
//!   retries, since the retry can be answered with a grant made for an earlier
//!   attempt's waiter).
//! - `mutual-exclusion`: holds counted only while surely valid (grant ack to the
//!   earliest of release invocation and the session's confirmed lifetime) never
//!   overlap on one lock. This is the server's own promise, judged through leases;
//!   it holds in both modes.
//! - `server-view`: a sampler reads each lock a few times a second; at most one
//!   exclusive holder.
//! - `no-leak`: after healing, once every session has ended or expired, the locks
//!   show no holders and no waiters.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use super::session::{op, Client, ClientEnd, Net, BACKOFF, TTL_MS};
use super::{Context, Op, Sent, Status, WorkloadResult};
use crate::checker::lease::{self, Grant, Hold, ResourceWrite, SessionEvidence};

/// `wait_ms` of an acquire (well under the 2 s client timeout).
pub(crate) const WAIT_MS: u64 = 800;
/// One critical section (or semaphore hold) in this many stalls.
pub(crate) const STALL_ONE_IN: u32 = 8;
/// A stall: longer than the TTL, with time for the server to expire the session and
/// for a waiter to be granted and run its own section.
pub(crate) const STALL: Duration = Duration::from_millis(TTL_MS + 1_000);
/// Attempts at a release answered 503 before giving the session up.
const RELEASE_ATTEMPTS: usize = 5;
/// Process id of the sampler and of the final idle checks.
const OBSERVER_PROCESS: u64 = 2_000_000;
/// How often the sampler reads every primitive.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// After healing, how long every primitive has to become idle.
const IDLE_DEADLINE: Duration = Duration::from_millis(TTL_MS + 10_000);

/// The record of something done in the harness itself (resource access, a stall).
pub(crate) fn local_op(
    process: u64,
    f: &str,
    key: &str,
    value: Value,
    ok: bool,
    invoke_ns: u64,
    complete_ns: u64,
) -> Op {
    Op {
        process,
        f: f.into(),
        key: key.into(),
        value,
        status: if ok { Status::Ok } else { Status::Fail },
        invoke_ns,
        complete_ns: Some(complete_ns),
        node: 0,
    }
}

/// Releases `name` (a lock or a semaphore) for `client`, retrying `503`s. Returns
/// the first attempt's invocation (the hold surely lasted until then) and the
/// outcome; an outcome other than `ok` / `fail` gives the session up.
pub(crate) async fn release(
    client: &mut Client,
    kind: &str,
    name: &str,
    session: u64,
    token: u64,
) -> (u64, Status) {
    let body = json!({ "session_id": session, "fencing_token": token });
    let path = format!("/v1/{kind}/{name}/release");
    let mut first = None;
    let mut status = Status::Unavailable;
    for _ in 0..RELEASE_ATTEMPTS {
        let reply = client.call(Method::POST, &path, Some(&body)).await;
        let value = json!({ "session": session, "token": token, "error": reply.code() });
        client.record("release", name, value, &reply);
        first.get_or_insert(reply.invoke_ns);
        status = reply.sent.status();
        if status != Status::Unavailable {
            break;
        }
        tokio::time::sleep(BACKOFF).await;
    }
    if matches!(status, Status::Unknown | Status::Unavailable) {
        client.abandon().await;
        if status == Status::Unknown {
            client.retire();
        }
    }
    (first.unwrap_or_else(|| client.now_ns()), status)
}

/// Reads every primitive of `kind` (`locks`, `semaphores`) a few times a second
/// until `until`: the operations and the `200` answers `(invoke_ns, name, view)`.
pub(crate) async fn observe(
    net: Net,
    kind: &'static str,
    names: Vec<String>,
    until: Instant,
    seed: u64,
) -> (Vec<Op>, Vec<(u64, String, Value)>) {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    let (mut ops, mut views) = (Vec::new(), Vec::new());
    while Instant::now() < until {
        for name in &names {
            let node = rng.gen_range(0..net.nodes());
            let reply = net
                .call(node, Method::GET, &format!("/v1/{kind}/{name}"), None)
                .await;
            ops.push(op(OBSERVER_PROCESS, "inspect", name, Value::Null, &reply));
            if let Sent::Answer(200, view) = reply.sent {
                views.push((reply.invoke_ns, name.clone(), view));
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    (ops, views)
}

/// After healing: every primitive must become idle (no holders, no waiters) once
/// every session has ended or expired. Returns the operations and the leaks.
pub(crate) async fn await_idle(net: &Net, kind: &str, names: &[String]) -> (Vec<Op>, Vec<Value>) {
    let (mut ops, mut leaks) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + IDLE_DEADLINE;
    for (i, name) in names.iter().enumerate() {
        let mut last = Value::Null;
        loop {
            let reply = net
                .call(
                    i % net.nodes(),
                    Method::GET,
                    &format!("/v1/{kind}/{name}"),
                    None,
                )
                .await;
            ops.push(op(
                OBSERVER_PROCESS,
                "final-inspect",
                name,
                Value::Null,
                &reply,
            ));
            if let Sent::Answer(200, view) = reply.sent {
                let empty = |field: &str| view[field].as_array().is_some_and(|a| a.is_empty());
                if empty("holders") && empty("waiters") {
                    break;
                }
                last = view;
            }
            if Instant::now() >= deadline {
                leaks.push(json!({ "resource": name, "last_view": last }));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    (ops, leaks)
}

/// A grant as the client saw it, and when it stopped counting itself the holder.
pub(crate) struct PendingHold {
    pub resource: String,
    pub process: u64,
    pub session: u64,
    pub token: u64,
    pub weight: u64,
    pub ack_ns: u64,
    pub release_invoke_ns: Option<u64>,
}

/// Holds cut to their surely valid part (see `checker::lease`).
pub(crate) fn valid_holds(pending: &[PendingHold], sessions: &[SessionEvidence]) -> Vec<Hold> {
    let live: std::collections::BTreeMap<u64, u64> = sessions
        .iter()
        .map(|s| (s.session, s.live_until_ns()))
        .collect();
    pending
        .iter()
        .map(|p| {
            let release = p.release_invoke_ns.unwrap_or(u64::MAX);
            let lease = live.get(&p.session).copied().unwrap_or(0);
            Hold {
                resource: p.resource.clone(),
                process: p.process,
                session: p.session,
                token: p.token,
                weight: p.weight,
                start_ns: p.ack_ns,
                end_ns: release.min(lease),
                ended_by_lease: lease < release,
            }
        })
        .collect()
}

/// Coverage of a set of holds: how many, how many non-empty, total valid time.
pub(crate) fn hold_counts(holds: &[Hold]) -> Value {
    let valid: Vec<&Hold> = holds.iter().filter(|h| h.start_ns < h.end_ns).collect();
    let held_ms: u64 = valid
        .iter()
        .map(|h| (h.end_ns - h.start_ns) / 1_000_000)
        .sum();
    json!({ "holds": holds.len(), "valid_holds": valid.len(), "valid_held_ms": held_ms })
}

/// A resource behind a lock, standing for an external storage service.
pub struct FencedResource {
    fenced: bool,
    counter: u64,
    /// The highest token seen (enforced only when `fenced`).
    highest: u64,
    accepted: Vec<ResourceWrite>,
    refused_reads: u64,
    refused_writes: u64,
}

impl FencedResource {
    pub fn new(fenced: bool) -> FencedResource {
        FencedResource {
            fenced,
            counter: 0,
            highest: 0,
            accepted: Vec::new(),
            refused_reads: 0,
            refused_writes: 0,
        }
    }

    /// Reads the counter under `token`; `None` when refused.
    pub fn read(&mut self, token: u64) -> Option<u64> {
        if self.fenced && token < self.highest {
            self.refused_reads += 1;
            return None;
        }
        self.highest = self.highest.max(token);
        Some(self.counter)
    }

    /// Writes `read + 1` under `token`; `false` when refused.
    pub fn write(&mut self, process: u64, token: u64, read: u64, at_ns: u64) -> bool {
        if self.fenced && token < self.highest {
            self.refused_writes += 1;
            return false;
        }
        self.highest = self.highest.max(token);
        self.counter = read + 1;
        self.accepted.push(ResourceWrite {
            process,
            token,
            read,
            wrote: read + 1,
            at_ns,
        });
        true
    }
}

/// What one lock client did.
struct LockEnd {
    client: ClientEnd,
    grants: Vec<Grant>,
    holds: Vec<PendingHold>,
    sections: u64,
    stalls: u64,
    /// Stalls after which the resource had seen a higher token (another holder ran).
    overtaken: u64,
}

/// Runs the lock clients, then checks (see the module documentation).
pub async fn run(mut context: Context, fenced: bool) -> anyhow::Result<WorkloadResult> {
    let names: Vec<String> = (0..context.keys.clamp(1, 2))
        .map(|i| format!("jepsen-lock-{i}"))
        .collect();
    let resources: Vec<Arc<Mutex<FencedResource>>> = names
        .iter()
        .map(|_| Arc::new(Mutex::new(FencedResource::new(fenced))))
        .collect();
    let net = Net::new(&context);
    let observer = tokio::spawn(observe(
        net.clone(),
        "locks",
        names.clone(),
        context.until,
        context.seed,
    ));
    let tasks: Vec<_> = (0..context.processes)
        .map(|index| {
            let client = Client::new(&context, index, "lock");
            tokio::spawn(lock_client(client, names.clone(), resources.clone()))
        })
        .collect();
    let mut ends = Vec::new();
    for task in tasks {
        ends.push(task.await?);
    }
    context.wait_healed().await;
    let (mut ops, views) = observer.await?;
    let (idle_ops, leaks) = await_idle(&net, "locks", &names).await;
    ops.extend(idle_ops);

    let (mut grants, mut pending, mut sessions) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sections, mut stalls, mut overtaken) = (0, 0, 0);
    for end in ends {
        ops.extend(end.client.ops);
        sessions.extend(end.client.sessions);
        grants.extend(end.grants);
        pending.extend(end.holds);
        sections += end.sections;
        stalls += end.stalls;
        overtaken += end.overtaken;
    }
    ops.sort_by_key(|op| op.invoke_ns);

    let mut resource_violations = Vec::new();
    let (mut accepted, mut refused_reads, mut refused_writes) = (0, 0, 0);
    for (name, resource) in names.iter().zip(&resources) {
        let resource = resource.lock().unwrap();
        resource_violations.extend(lease::fenced_log_violations(
            name,
            &resource.accepted,
            resource.counter,
        ));
        accepted += resource.accepted.len();
        refused_reads += resource.refused_reads;
        refused_writes += resource.refused_writes;
    }
    let holds = valid_holds(&pending, &sessions);
    let view_violations: Vec<Value> = views
        .iter()
        .filter_map(|(at, name, view)| lease::lock_view_violations(name, *at, view))
        .collect();
    let checks = vec![
        lease::check(
            "fenced-resource",
            "lost updates or token regressions at the resource",
            resource_violations,
            json!({
                "fenced": fenced, "grants": grants.len(), "sections": sections, "stalls": stalls,
                "stalls_overtaken": overtaken, "accepted_writes": accepted,
                "refused_reads": refused_reads, "refused_writes": refused_writes,
            }),
        ),
        lease::check(
            "token-order",
            "duplicate or out-of-order fencing tokens",
            lease::token_violations(&grants),
            json!({ "grants": grants.len() }),
        ),
        lease::check(
            "mutual-exclusion",
            "overlapping valid holds",
            lease::overlap_violations(&holds, 1),
            json!({ "holds": hold_counts(&holds), "handovers": lease::handover_gaps(&holds) }),
        ),
        lease::check(
            "server-view",
            "inconsistent lock views",
            view_violations,
            json!({ "samples": views.len() }),
        ),
        lease::check(
            "no-leak",
            "locks still held or awaited after every session ended",
            leaks,
            json!({ "locks": names.len(), "sessions": sessions.len() }),
        ),
    ];
    Ok(WorkloadResult { ops, checks })
}

async fn lock_client(
    mut client: Client,
    names: Vec<String>,
    resources: Vec<Arc<Mutex<FencedResource>>>,
) -> LockEnd {
    let (mut grants, mut holds) = (Vec::new(), Vec::new());
    let (mut sections, mut stalls, mut overtaken) = (0, 0, 0);
    // After a 503 the same lock is retried by the same session: a waiting acquire
    // answered 503 may have left its waiter queued, and the retry resumes it (or gets
    // the grant it already received). `(session, lock, first invocation)`.
    let mut sticky: Option<(u64, usize, u64)> = None;
    while Instant::now() < client.until {
        let Some(session) = client.session().await else {
            break;
        };
        let (which, chain_invoke_ns) = match sticky.take() {
            Some((s, which, first)) if s == session => (which, Some(first)),
            _ => (client.rng.gen_range(0..names.len()), None),
        };
        let name = names[which].clone();
        let body = json!({ "session_id": session, "wait_ms": WAIT_MS });
        let reply = client
            .call(
                Method::POST,
                &format!("/v1/locks/{name}/acquire"),
                Some(&body),
            )
            .await;
        let token = match &reply.sent {
            Sent::Answer(200, body) => body["fencing_token"].as_u64(),
            _ => None,
        };
        let value = json!({ "session": session, "wait_ms": WAIT_MS, "token": token, "error": reply.code() });
        client.record("acquire", &name, value, &reply);
        let token = match (reply.sent.status(), token) {
            (Status::Ok, Some(token)) => token,
            (Status::Fail, _) => {
                if reply.session_not_found() {
                    client.session_gone(reply.invoke_ns);
                } else if reply.code() != Some("lock_held") {
                    eprintln!("lock: unexpected acquire answer {:?}", reply.sent);
                }
                continue;
            }
            (Status::Unavailable, _) => {
                sticky = Some((session, which, chain_invoke_ns.unwrap_or(reply.invoke_ns)));
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
            // Unknown, or a 200 without a token: maybe holding, never counted.
            _ => {
                client.abandon().await;
                client.retire();
                continue;
            }
        };
        grants.push(Grant {
            resource: name.clone(),
            process: client.process,
            session,
            token,
            // The grant may have been made for an earlier attempt of this chain.
            invoke_ns: chain_invoke_ns.unwrap_or(reply.invoke_ns),
            ack_ns: reply.complete_ns,
        });
        holds.push(PendingHold {
            resource: name.clone(),
            process: client.process,
            session,
            token,
            weight: 1,
            ack_ns: reply.complete_ns,
            release_invoke_ns: None,
        });
        sections += 1;

        // The critical section: read, (stall,) write counter + 1, under the token.
        let resource = &resources[which];
        let at = client.now_ns();
        let read = resource.lock().unwrap().read(token);
        let op = local_op(
            client.process,
            "resource-read",
            &name,
            json!({ "token": token, "read": read }),
            read.is_some(),
            at,
            client.now_ns(),
        );
        client.ops.push(op);
        if let Some(read) = read {
            if client.rng.gen_ratio(1, STALL_ONE_IN) {
                let at = client.now_ns();
                client.pause_keepalives(true);
                tokio::time::sleep(STALL).await;
                client.pause_keepalives(false);
                stalls += 1;
                let overtaken_now = resource.lock().unwrap().highest > token;
                overtaken += u64::from(overtaken_now);
                let value = json!({ "token": token, "ms": STALL.as_millis() as u64, "overtaken": overtaken_now });
                client.ops.push(local_op(
                    client.process,
                    "stall",
                    &name,
                    value,
                    true,
                    at,
                    client.now_ns(),
                ));
            } else {
                let ms = client.rng.gen_range(5..40);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let at = client.now_ns();
            let accepted = resource
                .lock()
                .unwrap()
                .write(client.process, token, read, at);
            let value = json!({ "token": token, "value": read + 1 });
            client.ops.push(local_op(
                client.process,
                "resource-write",
                &name,
                value,
                accepted,
                at,
                client.now_ns(),
            ));
        }

        let (release_invoke, _) = release(&mut client, "locks", &name, session, token).await;
        if let Some(hold) = holds.last_mut() {
            hold.release_invoke_ns = Some(release_invoke);
        }
    }
    LockEnd {
        client: client.finish().await,
        grants,
        holds,
        sections,
        stalls,
        overtaken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two overlapping sections: token 10 reads, token 20 reads, writes, then token
    /// 10 writes its stale counter.
    fn overlap(resource: &mut FencedResource) -> (Option<u64>, Option<u64>, bool, bool) {
        let a = resource.read(10);
        let b = resource.read(20);
        let b_wrote = resource.write(2, 20, b.unwrap(), 2);
        let a_wrote = resource.write(1, 10, a.unwrap(), 3);
        (a, b, b_wrote, a_wrote)
    }

    #[test]
    fn the_fence_refuses_the_overtaken_section_and_the_log_stays_clean() {
        let mut resource = FencedResource::new(true);
        let (a, b, b_wrote, a_wrote) = overlap(&mut resource);
        assert_eq!((a, b), (Some(0), Some(0)));
        assert!(b_wrote && !a_wrote);
        // A lower token is refused at the read as well.
        assert_eq!(resource.read(15), None);
        assert_eq!(resource.refused_reads + resource.refused_writes, 2);
        let v = lease::fenced_log_violations("r", &resource.accepted, resource.counter);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn without_the_fence_the_overlap_is_a_lost_update() {
        let mut resource = FencedResource::new(false);
        let (_, _, b_wrote, a_wrote) = overlap(&mut resource);
        assert!(b_wrote && a_wrote);
        let v = lease::fenced_log_violations("r", &resource.accepted, resource.counter);
        assert!(v.iter().any(|v| v["kind"] == "lost update"), "{v:?}");
    }
}
