//! The semaphore workload: weighted permits under leases.
//!
//! **Clients.** Each of `processes` sequential clients owns a session kept alive
//! (and its renewals confirmed) exactly as in the lock workload (`session.rs`:
//! [`Client`]).
//! It loops: acquire 1 or 2 permits of one of at most two semaphores of limit
//! [`LIMIT`] with a bounded `wait_ms`; on a grant hold for a short random time, or,
//! one hold in [`STALL_ONE_IN`], stall past the TTL with keepalives stopped (the
//! server expires the session and hands the permits on while the client still
//! believes it holds them); release with the token (refused after a stall: a `fail`,
//! expected). Outcomes as in the lock workload: an unknown acquire or release is
//! never counted as holding, and gives its session up under a new process id; after
//! a `503` the same semaphore is retried with the same permits (resuming a waiter
//! that may be queued).
//!
//! **Checkers** (`checker::lease`):
//! - `limit`: holds counted only while surely valid (grant ack to the earliest of the
//!   release's invocation and the session's confirmed lifetime, see `checker::lease`)
//!   never weigh more than the limit at any instant, per semaphore.
//! - `server-view`: a sampler reads each semaphore a few times a second; the holders'
//!   permits stay within the limit, `used` is their sum, their tokens are distinct.
//! - `token-order`: tokens of acknowledged grants are unique per semaphore and
//!   increase in real-time order.
//! - `no-leak`: after healing, once every session has ended or expired, every
//!   semaphore shows no holders and no waiters (its permits all came back).

use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};

use super::lock::{
    await_idle, hold_counts, local_op, observe, release, valid_holds, PendingHold, STALL,
    STALL_ONE_IN, WAIT_MS,
};
use super::session::{Client, ClientEnd, Net, BACKOFF};
use super::{Context, Sent, Status, WorkloadResult};
use crate::checker::lease::{self, Grant};

/// Every semaphore's limit.
pub const LIMIT: u64 = 3;
/// Permits per acquire: 1 ..= this.
const MAX_PERMITS: u64 = 2;

struct SemaphoreEnd {
    client: ClientEnd,
    grants: Vec<Grant>,
    holds: Vec<PendingHold>,
    stalls: u64,
}

/// Runs the semaphore clients, then checks (see the module documentation).
pub async fn run(mut context: Context) -> anyhow::Result<WorkloadResult> {
    let names: Vec<String> = (0..context.keys.clamp(1, 2))
        .map(|i| format!("jepsen-semaphore-{i}"))
        .collect();
    let net = Net::new(&context);
    let observer = tokio::spawn(observe(
        net.clone(),
        "semaphores",
        names.clone(),
        context.until,
        context.seed,
    ));
    let tasks: Vec<_> = (0..context.processes)
        .map(|index| {
            let client = Client::new(&context, index, "semaphore");
            tokio::spawn(semaphore_client(client, names.clone()))
        })
        .collect();
    let mut ends = Vec::new();
    for task in tasks {
        ends.push(task.await?);
    }
    context.wait_healed().await;
    let (mut ops, views) = observer.await?;
    let (idle_ops, leaks) = await_idle(&net, "semaphores", &names).await;
    ops.extend(idle_ops);

    let (mut grants, mut pending, mut sessions, mut stalls) =
        (Vec::new(), Vec::new(), Vec::new(), 0);
    for end in ends {
        ops.extend(end.client.ops);
        sessions.extend(end.client.sessions);
        grants.extend(end.grants);
        pending.extend(end.holds);
        stalls += end.stalls;
    }
    ops.sort_by_key(|op| op.invoke_ns);
    let holds = valid_holds(&pending, &sessions);
    let view_violations: Vec<Value> = views
        .iter()
        .filter_map(|(at, name, view)| lease::semaphore_view_violations(name, *at, view, LIMIT))
        .collect();
    let busiest = views
        .iter()
        .filter_map(|(_, _, view)| view["used"].as_u64())
        .max()
        .unwrap_or(0);
    let mut limit_counts = hold_counts(&holds);
    limit_counts["grants"] = json!(grants.len());
    limit_counts["stalls"] = json!(stalls);
    limit_counts["limit"] = json!(LIMIT);
    limit_counts["peak_valid_weight"] = json!(lease::peak_weight(&holds));
    let checks = vec![
        lease::check(
            "limit",
            "instants with valid holds over the limit",
            lease::overlap_violations(&holds, LIMIT),
            limit_counts,
        ),
        lease::check(
            "server-view",
            "inconsistent semaphore views",
            view_violations,
            json!({ "samples": views.len(), "most_permits_used": busiest }),
        ),
        lease::check(
            "token-order",
            "duplicate or out-of-order fencing tokens",
            lease::token_violations(&grants),
            json!({ "grants": grants.len() }),
        ),
        lease::check(
            "no-leak",
            "semaphores still held or awaited after every session ended",
            leaks,
            json!({ "semaphores": names.len(), "sessions": sessions.len() }),
        ),
    ];
    Ok(WorkloadResult { ops, checks })
}

async fn semaphore_client(mut client: Client, names: Vec<String>) -> SemaphoreEnd {
    let (mut grants, mut holds, mut stalls) = (Vec::new(), Vec::new(), 0);
    // After a 503 the same acquire is retried by the same session: a waiting
    // acquire answered 503 may have left its waiter queued, and the retry resumes it
    // (or gets the grant it already received). `(session, semaphore, permits, first
    // invocation)`.
    let mut sticky: Option<(u64, usize, u64, u64)> = None;
    while Instant::now() < client.until {
        let Some(session) = client.session().await else {
            break;
        };
        let (which, permits, chain_invoke_ns) = match sticky.take() {
            Some((s, which, permits, first)) if s == session => (which, permits, Some(first)),
            _ => (
                client.rng.gen_range(0..names.len()),
                client.rng.gen_range(1..=MAX_PERMITS),
                None,
            ),
        };
        let name = names[which].clone();
        let body = json!({ "session_id": session, "permits": permits, "limit": LIMIT, "wait_ms": WAIT_MS });
        let reply = client
            .call(
                Method::POST,
                &format!("/v1/semaphores/{name}/acquire"),
                Some(&body),
            )
            .await;
        let token = match &reply.sent {
            Sent::Answer(200, body) => body["fencing_token"].as_u64(),
            _ => None,
        };
        let value = json!({ "session": session, "permits": permits, "wait_ms": WAIT_MS, "token": token, "error": reply.code() });
        client.record("acquire", &name, value, &reply);
        let token = match (reply.sent.status(), token) {
            (Status::Ok, Some(token)) => token,
            (Status::Fail, _) => {
                if reply.session_not_found() {
                    client.session_gone(reply.invoke_ns);
                } else if reply.code() != Some("permits_unavailable") {
                    eprintln!("semaphore: unexpected acquire answer {:?}", reply.sent);
                }
                continue;
            }
            (Status::Unavailable, _) => {
                let first = chain_invoke_ns.unwrap_or(reply.invoke_ns);
                sticky = Some((session, which, permits, first));
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
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
            weight: permits,
            ack_ns: reply.complete_ns,
            release_invoke_ns: None,
        });
        if client.rng.gen_ratio(1, STALL_ONE_IN) {
            let at = client.now_ns();
            client.pause_keepalives(true);
            tokio::time::sleep(STALL).await;
            client.pause_keepalives(false);
            stalls += 1;
            let value = json!({ "token": token, "ms": STALL.as_millis() as u64 });
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
            let ms = client.rng.gen_range(10..150);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let (release_invoke, _) = release(&mut client, "semaphores", &name, session, token).await;
        if let Some(hold) = holds.last_mut() {
            hold.release_invoke_ns = Some(release_invoke);
        }
    }
    SemaphoreEnd {
        client: client.finish().await,
        grants,
        holds,
        stalls,
    }
}
