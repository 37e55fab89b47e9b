//! Membership changes with real nodes: spares that join with `serve --join` and
//! are removed with `DELETE` (then stopped and wiped), a founding voter removed
//! and added back through the API, and the restoration of the full membership
//! after the schedule.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::{Ctx, FaultEvent};

/// What the log says when a `--join` made the node a voter.
const JOINED: &str = "joined the cluster as a voter";

/// One spare's join, as [`shrink`] needs it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Joined {
    /// The leader's view showed it a voter.
    pub seen_voter: bool,
    /// How many [`JOINED`] lines its log (kept across its starts) had before.
    pub logged_before: usize,
}

fn joins_logged(cluster: &crate::cluster::Cluster, id: u64) -> usize {
    std::fs::read_to_string(&cluster.node(id).log_path).map_or(0, |log| log.matches(JOINED).count())
}

/// Starts each of `spares` fresh (wiped) with `serve --join` at node `via`, one
/// after the other, and waits until the leader's view shows it a voter. Returns,
/// per spare, how its join went, and `detail` with the evidence: the
/// PIDs started, each join's outcome, what each spare logged. With `lead`, once
/// all joined, leadership is handed to the last spare (`POST /v1/cluster/leader`),
/// so that its removal later is the removal of the leader (handed over first).
pub(super) async fn grow(
    ctx: &Ctx,
    spares: &[u64],
    via: u64,
    lead: bool,
    mut detail: Map<String, Value>,
) -> (Vec<Joined>, Map<String, Value>) {
    detail.insert("change".into(), json!("grow"));
    detail.insert("join_via".into(), json!(via));
    let mut pids = Vec::new();
    let mut joins = Map::new();
    let mut joined = Vec::new();
    for &spare in spares {
        let (started, logged_before) = {
            let mut cluster = ctx.cluster.lock().await;
            let logged_before = joins_logged(&cluster, spare);
            let started = cluster
                .wipe(spare)
                .and_then(|()| cluster.spawn_joining(spare, via))
                .map(|()| cluster.node(spare).child.as_ref().map_or(0, |c| c.id()));
            (started, logged_before)
        };
        let outcome = match started {
            Ok(pid) => {
                pids.push(pid);
                wait_membership(ctx, spare, true).await
            }
            Err(e) => json!({"done": false, "start_error": e.to_string()}),
        };
        joined.push(Joined {
            seen_voter: outcome["done"] == true,
            logged_before,
        });
        joins.insert(spare.to_string(), outcome);
    }
    detail.insert("started_pids".into(), json!(pids));
    detail.insert("joined".into(), Value::Object(joins));
    if lead && joined.iter().all(|j| j.seen_voter) {
        let to = spares[spares.len() - 1];
        detail.insert("transfer".into(), transfer_leadership(ctx, via, to).await);
    }
    (joined, detail)
}

/// Asks node `via` (forwarded to the leader) to hand leadership to `to`; the
/// answer's status, the leader it names and the error, if any.
async fn transfer_leadership(ctx: &Ctx, via: u64, to: u64) -> Value {
    let request = ctx
        .slow_http
        .post(format!("{}/v1/cluster/leader", ctx.url(via)))
        .json(&json!({ "to": to }));
    let at_ms = ctx.now_ms();
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            json!({"at_ms": at_ms, "to": to, "status": status,
                "leader_id": body["leader_id"], "error": body["error"]})
        }
        Err(e) => json!({"at_ms": at_ms, "to": to, "error": e.to_string()}),
    }
}

/// Removes each of `spares` through the leader, then stops and wipes it (a spare
/// whose join was never seen done is stopped first, so that it cannot join after
/// its removal). Returns each removal's record (with `logged_joined`: the spare
/// logged its join since it started) and the PIDs stopped.
pub(super) async fn shrink(ctx: &Ctx, spares: &[u64], joined: &[Joined]) -> (Value, Vec<u32>) {
    let mut removals = Map::new();
    let mut stopped = Vec::new();
    for (&spare, &joined) in spares.iter().zip(joined) {
        if !joined.seen_voter {
            stopped.extend(ctx.cluster.lock().await.kill(spare));
        }
        let mut removal = change_membership(ctx, spare, false).await;
        let mut cluster = ctx.cluster.lock().await;
        removal["logged_joined"] = json!(joins_logged(&cluster, spare) > joined.logged_before);
        // Still a member (the removal was not confirmed): left running, so that
        // the cluster keeps its quorum; `restore` tries again.
        if removal["done"] == true {
            stopped.extend(cluster.kill(spare));
            if let Err(e) = cluster.wipe(spare) {
                removal["wipe_error"] = json!(e.to_string());
            }
        }
        removals.insert(spare.to_string(), removal);
    }
    (Value::Object(removals), stopped)
}

/// Waits (at most 45 s) until the leader's view shows `node` a voter (`voter`) or
/// no member, without asking for anything (a `--join` is under way).
async fn wait_membership(ctx: &Ctx, node: u64, voter: bool) -> Value {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(45);
    loop {
        if let Some((leader, _, view)) = ctx.leader().await {
            let member = view.voters.contains(&node) || view.learners.contains(&node);
            if view.voters.contains(&node) == voter && (voter || !member) {
                return json!({"done": true, "via": leader, "voters": view.voters,
                    "learners": view.learners, "waited_ms": started.elapsed().as_millis() as u64});
            }
        }
        if Instant::now() >= deadline {
            return json!({"done": false, "waited_ms": started.elapsed().as_millis() as u64});
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Adds `node` as a voter (`add`) or removes it, through the leader, until the
/// leader's view shows it done (at most 45 s). Records every attempt.
pub(super) async fn change_membership(ctx: &Ctx, node: u64, add: bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(45);
    let (addr, raft_addr) = {
        let cluster = ctx.cluster.lock().await;
        (cluster.addr(node), cluster.raft_addr(node))
    };
    let mut attempts = Vec::new();
    loop {
        if let Some((leader, _, view)) = ctx.leader().await {
            if view.voters.contains(&node) == add && (add || !view.learners.contains(&node)) {
                return json!({"done": true, "voters": view.voters, "learners": view.learners, "attempts": attempts});
            }
            let request = if add {
                ctx.slow_http
                    .post(format!("{}/v1/cluster/members", ctx.url(leader)))
                    .json(&json!({"id": node, "addr": addr, "raft_addr": raft_addr}))
            } else {
                ctx.slow_http
                    .delete(format!("{}/v1/cluster/members/{node}", ctx.url(leader)))
            };
            let at_ms = ctx.now_ms();
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    json!({"at_ms": at_ms, "via": leader, "status": status, "error": body["error"]})
                }
                Err(e) => json!({"at_ms": at_ms, "via": leader, "error": e.to_string()}),
            };
            attempts.push(outcome);
        }
        if Instant::now() >= deadline {
            return json!({"done": false, "attempts": attempts});
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// After the schedule: every link open, every founding node a voter, no spare a
/// member or running. An event only if something had to be restored.
pub(super) async fn restore(ctx: &Ctx) -> Option<FaultEvent> {
    let start_ms = ctx.now_ms();
    let reopened = ctx.cluster.lock().await.proxy.heal();
    let view = ctx.leader().await.map(|(_, _, view)| view);
    let spares_in: Vec<u64> = ctx
        .spares
        .iter()
        .copied()
        .filter(|id| {
            view.as_ref()
                .is_some_and(|v| v.voters.contains(id) || v.learners.contains(id))
        })
        .collect();
    let mut spares_removed = Value::Null;
    if !spares_in.is_empty() {
        let joined = Joined {
            seen_voter: true,
            logged_before: 0,
        };
        let joined = vec![joined; spares_in.len()];
        spares_removed = shrink(ctx, &spares_in, &joined).await.0;
    }
    let view = if spares_in.is_empty() {
        view
    } else {
        ctx.leader().await.map(|(_, _, view)| view)
    };
    // A spare still running outside the membership (its join never seen done);
    // one still a member (its removal failed again) is left to the report.
    let mut stray = Vec::new();
    if let Some(view) = &view {
        let mut cluster = ctx.cluster.lock().await;
        for &spare in &ctx.spares {
            let member = view.voters.contains(&spare) || view.learners.contains(&spare);
            if !member {
                stray.extend(cluster.kill(spare));
            }
        }
    }
    let voters = view.map(|view| view.voters);
    let missing: Vec<u64> = match &voters {
        Some(voters) => ctx
            .ids()
            .into_iter()
            .filter(|id| !voters.contains(id))
            .collect(),
        None => Vec::new(),
    };
    if reopened.is_empty() && missing.is_empty() && spares_in.is_empty() && stray.is_empty() {
        return None;
    }
    let mut readded = Map::new();
    for &node in &missing {
        {
            let mut cluster = ctx.cluster.lock().await;
            if cluster.node(node).child.is_none() {
                let _ = cluster.spawn(node);
            }
        }
        readded.insert(node.to_string(), change_membership(ctx, node, true).await);
    }
    Some(FaultEvent {
        kind: "restore".into(),
        node: missing.first().copied().unwrap_or(0),
        pid: 0,
        was_leader: false,
        start_ms,
        end_ms: ctx.now_ms(),
        nodes: missing,
        detail: json!({"links_reopened": reopened, "voters_before": voters, "readded": readded,
            "spares_removed": spares_removed, "stray_spares_stopped": stray}),
    })
}
