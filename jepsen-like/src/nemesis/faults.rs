//! Installing one fault and healing it: what each kind does to the processes, the
//! links or the clock, the leadership observed while it holds, and the event that
//! records it with its proof.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::links::{bridge_halves, cross_pairs, cut_mode, links_undo, set_links, split_majority};
use super::membership::{change_membership, grow, shrink};
use super::{leader_of, Ctx, FaultEvent, Installed, Nemesis, Observation, Undo, CLOCK_JUMP_MS};
use crate::proxy::{LinkMode, LinkStats};

/// Installs one fault of `kind`; `None` if it could not be (no leader known for a
/// leader-targeted fault, no voter to remove…).
pub(super) async fn install(ctx: &Ctx, kind: Nemesis, rng: &mut SmallRng) -> Option<Installed> {
    let ids = ctx.ids();
    let views = ctx.views().await;
    let leader = leader_of(&views);
    let (leader_id, term) = match &leader {
        Some((id, term, _)) => (Some(*id), *term),
        None => (None, 0),
    };
    let mut detail = Map::new();
    detail.insert("leader_at_install".into(), json!(leader_id));
    detail.insert("term_at_install".into(), json!(term));
    let before = ctx.cluster.lock().await.proxy.stats();
    let start_ms = ctx.now_ms();
    // The leader half of the time, else any node.
    let some_node = |rng: &mut SmallRng| match leader_id {
        Some(leader) if rng.gen_bool(0.5) => leader,
        _ => *ids.choose(rng).expect("nodes"),
    };
    let installed = |node: u64, nodes: Vec<u64>, pid: u32, detail, undo| Installed {
        kind,
        node,
        nodes,
        pid,
        was_leader: leader_id == Some(node),
        start_ms,
        detail,
        undo,
    };
    match kind {
        Nemesis::Kill | Nemesis::Pause => {
            let node = some_node(rng);
            let mut cluster = ctx.cluster.lock().await;
            let (pid, undo) = if kind == Nemesis::Kill {
                (cluster.kill(node)?, Undo::Restart)
            } else {
                (cluster.pause(node, true)?, Undo::Resume)
            };
            Some(installed(node, vec![node], pid, detail, undo))
        }
        Nemesis::PartitionLeader => {
            let isolated = leader_id?;
            let rest: Vec<u64> = ids.iter().copied().filter(|id| *id != isolated).collect();
            let groups = vec![vec![isolated], rest.clone()];
            let mode = cut_mode(rng);
            let pairs = cross_pairs(&groups);
            set_links(ctx, &pairs, mode).await;
            detail.insert("groups".into(), json!(groups));
            detail.insert("cut_mode".into(), json!(mode));
            let undo = links_undo(&before, pairs, Some(rest), leader_id, term);
            Some(installed(isolated, ids.clone(), 0, detail, undo))
        }
        Nemesis::PartitionMajority => {
            let (majority, minority, leader_side) = split_majority(&ids, leader_id, rng);
            let groups = vec![majority.clone(), minority.clone()];
            let mode = cut_mode(rng);
            let pairs = cross_pairs(&groups);
            set_links(ctx, &pairs, mode).await;
            detail.insert("groups".into(), json!(groups));
            detail.insert("leader_side".into(), json!(leader_side));
            detail.insert("cut_mode".into(), json!(mode));
            let undo = links_undo(&before, pairs, Some(majority), leader_id, term);
            Some(installed(minority[0], ids.clone(), 0, detail, undo))
        }
        Nemesis::Bridge => {
            if ids.len() < 3 {
                return None;
            }
            // Any node (a leader as the bridge changes little: followers do not talk).
            let bridge = *ids.choose(rng).expect("nodes");
            let (left, right) = bridge_halves(&ids, bridge, rng);
            let mode = cut_mode(rng);
            let pairs = cross_pairs(&[left.clone(), right.clone()]);
            set_links(ctx, &pairs, mode).await;
            let mut left_side = left;
            left_side.push(bridge);
            let mut right_side = vec![bridge];
            right_side.extend(right);
            detail.insert("groups".into(), json!([left_side, right_side]));
            detail.insert("bridge".into(), json!(bridge));
            detail.insert("cut_mode".into(), json!(mode));
            let undo = links_undo(&before, pairs, None, leader_id, term);
            Some(installed(bridge, ids.clone(), 0, detail, undo))
        }
        Nemesis::OneWay => {
            let node = some_node(rng);
            let outbound = rng.gen_bool(0.5);
            let mode = cut_mode(rng);
            let pairs: Vec<(u64, u64)> = ids
                .iter()
                .filter(|id| **id != node)
                .map(|&peer| if outbound { (node, peer) } else { (peer, node) })
                .collect();
            set_links(ctx, &pairs, mode).await;
            detail.insert(
                "direction".into(),
                json!(if outbound { "outbound" } else { "inbound" }),
            );
            detail.insert(
                "description".into(),
                json!(if outbound {
                    format!("links {node}→others cut: node {node}'s own requests (and their responses) fail; the others' requests to {node} still work")
                } else {
                    format!("links others→{node} cut: the others' requests to {node} (and their responses) fail; node {node}'s own requests still work")
                }),
            );
            detail.insert("cut_mode".into(), json!(mode));
            let undo = links_undo(&before, pairs, None, leader_id, term);
            Some(installed(node, ids.clone(), 0, detail, undo))
        }
        Nemesis::Delay | Nemesis::Reset => {
            let one_node = rng.gen_bool(0.5);
            let node = some_node(rng);
            let pairs: Vec<(u64, u64)> = ctx
                .cluster
                .lock()
                .await
                .proxy
                .pairs()
                .into_iter()
                .filter(|(from, to)| !one_node || *from == node || *to == node)
                .collect();
            let mode = if kind == Nemesis::Delay {
                let min_ms = rng.gen_range(5..=150);
                let max_ms = rng.gen_range(min_ms..=300);
                LinkMode::Delay { min_ms, max_ms }
            } else {
                let min_ms = rng.gen_range(100..=400);
                let max_ms = rng.gen_range(min_ms..=800);
                LinkMode::Reset { min_ms, max_ms }
            };
            set_links(ctx, &pairs, mode).await;
            detail.insert(
                "scope".into(),
                json!(if one_node {
                    format!("every link from or to node {node}")
                } else {
                    "every link".to_owned()
                }),
            );
            detail.insert("link_mode".into(), json!(mode));
            let nodes = if one_node { vec![node] } else { ids.clone() };
            let undo = links_undo(&before, pairs, None, leader_id, term);
            Some(installed(node, nodes, 0, detail, undo))
        }
        Nemesis::Membership => {
            let (leader, _, view) = leader?;
            detail.insert("voters_before".into(), json!(view.voters));
            let out: Vec<u64> = ctx
                .spares
                .iter()
                .copied()
                .filter(|id| !view.voters.contains(id) && !view.learners.contains(id))
                .collect();
            if !out.is_empty() && rng.gen_bool(0.5) {
                let count = if out.len() > 1 && rng.gen_bool(0.5) {
                    2
                } else {
                    1
                };
                let via = *ids.choose(rng).expect("nodes");
                let lead = rng.gen_bool(0.5);
                let (joined, detail) = grow(ctx, &out[..count], via, lead, detail).await;
                let undo = Undo::Shrink {
                    spares: out[..count].to_vec(),
                    joined,
                };
                return Some(installed(out[0], out[..count].to_vec(), 0, detail, undo));
            }
            detail.insert("change".into(), json!("replace"));
            let candidates: Vec<u64> = view
                .voters
                .iter()
                .copied()
                .filter(|id| *id != leader && ids.contains(id))
                .collect();
            let node = *candidates.choose(rng)?;
            let wiped = rng.gen_bool(0.5);
            let removal = change_membership(ctx, node, false).await;
            let removed = removal["done"] == true;
            detail.insert("remove".into(), removal);
            // The removed node is not told: stop it (docs/operations.md). A node whose
            // removal was not confirmed is left alone: wiping a voter would break
            // Raft's assumptions, and the run would blame the server for it.
            let wiped = wiped && removed;
            let pid = if removed {
                let mut cluster = ctx.cluster.lock().await;
                let pid = cluster.kill(node).unwrap_or(0);
                if wiped {
                    if let Err(e) = cluster.wipe(node) {
                        detail.insert("wipe_error".into(), json!(e.to_string()));
                    }
                }
                pid
            } else {
                0
            };
            detail.insert("removed".into(), json!(removed));
            detail.insert("wiped".into(), json!(wiped));
            Some(installed(
                node,
                vec![node],
                pid,
                detail,
                Undo::Readd { wiped },
            ))
        }
        Nemesis::ClockJump => {
            let node = leader_id?;
            let magnitude = rng.gen_range(CLOCK_JUMP_MS);
            let offset_ms = if rng.gen_bool(0.75) {
                magnitude
            } else {
                -magnitude
            };
            // Not set (the leader did not answer): no fault to report.
            let view = set_clock_offset(ctx, node, offset_ms).await.ok()?;
            detail.insert("offset_ms".into(), json!(offset_ms));
            detail.insert("clock_at_install".into(), view.clone());
            let undo = Undo::ClearClock {
                installed: view,
                at: Instant::now(),
            };
            Some(installed(node, vec![node], 0, detail, undo))
        }
        Nemesis::None | Nemesis::Mixed => None,
    }
}

/// `POST /v1/debug/clock` on `node`; its answer (offset, wall clock, cluster time).
async fn set_clock_offset(ctx: &Ctx, node: u64, offset_ms: i64) -> Result<Value, String> {
    let request = ctx
        .http
        .post(format!("{}/v1/debug/clock", ctx.url(node)))
        .json(&json!({ "offset_ms": offset_ms }));
    let response = tokio::time::timeout(Duration::from_secs(2), request.send())
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == 200 {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

/// What a `clock-jump` did to cluster time: its advance on the jumped node while
/// the offset was set, against the harness's elapsed time (it must stay close to
/// it; the offset is an hour).
fn clock_jump_evidence(installed: &Value, cleared: &Value, held: Duration) -> Value {
    let time = |view: &Value| view["cluster_time_ms"].as_u64().unwrap_or(0);
    let advance_ms = time(cleared).saturating_sub(time(installed));
    json!({
        "cluster_time_advance_ms": advance_ms,
        "held_ms": held.as_millis() as u64,
        "wall_minus_cluster_time_at_install_ms":
            installed["wall_ms"].as_i64().unwrap_or(0) - time(installed) as i64,
    })
}

/// Polls every node's view for `hold`, keeping each change of (state, leader, term).
pub(super) async fn observe(ctx: &Ctx, hold: Duration) -> Vec<Observation> {
    let end = Instant::now() + hold;
    let mut last: BTreeMap<u64, (String, Option<u64>, u64)> = BTreeMap::new();
    let mut observations = Vec::new();
    loop {
        let at_ms = ctx.now_ms();
        for (node, view) in ctx.views().await {
            let now = (view.state.clone(), view.leader, view.term);
            if last.get(&node) != Some(&now) {
                last.insert(node, now);
                observations.push(Observation {
                    at_ms,
                    node,
                    state: view.state,
                    leader: view.leader,
                    term: view.term,
                });
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return observations;
        }
        tokio::time::sleep(left.min(Duration::from_millis(200))).await;
    }
}

/// The most observations kept per event (leadership can flap under delay).
const MAX_OBSERVATIONS: usize = 60;

/// Undoes `fault` and writes its event.
pub(super) async fn heal(ctx: &Ctx, fault: Installed, observations: &[Observation]) -> FaultEvent {
    let Installed {
        kind,
        node,
        nodes,
        pid,
        was_leader,
        start_ms,
        mut detail,
        undo,
    } = fault;
    let relevant: Vec<&Observation> = observations
        .iter()
        .filter(|o| o.at_ms >= start_ms)
        .collect();
    detail.insert("leaders_seen".into(), leaders_seen(&relevant));
    detail.insert(
        "observations".into(),
        json!(relevant.iter().take(MAX_OBSERVATIONS).collect::<Vec<_>>()),
    );
    match undo {
        Undo::Restart => {
            let mut cluster = ctx.cluster.lock().await;
            if let Err(e) = cluster.spawn(node) {
                detail.insert("restart_error".into(), json!(e.to_string()));
            }
            let new_pid = cluster.node(node).child.as_ref().map(|c| c.id());
            detail.insert("restarted_pid".into(), json!(new_pid));
        }
        Undo::Resume => {
            ctx.cluster.lock().await.pause(node, false);
        }
        Undo::Links {
            pairs,
            before,
            majority,
            old_leader,
            old_term,
        } => {
            let during = {
                let cluster = ctx.cluster.lock().await;
                let during = cluster.proxy.stats();
                for &(from, to) in &pairs {
                    cluster.proxy.set(from, to, LinkMode::Open);
                }
                during
            };
            // Let the connections a blackhole held be reset before counting them.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let after = ctx.cluster.lock().await.proxy.stats();
            let mut total = LinkStats::default();
            let mut links = Map::new();
            let mut reset_at_heal = 0;
            for pair in &pairs {
                let delta = during[pair].since(&before[pair]);
                total = total.plus(&delta);
                links.insert(format!("{}->{}", pair.0, pair.1), json!(delta));
                reset_at_heal += after[pair].killed - during[pair].killed;
            }
            detail.insert("links".into(), Value::Object(links));
            detail.insert("link_totals".into(), json!(total));
            detail.insert("connections_reset_at_heal".into(), json!(reset_at_heal));
            if let Some(majority) = majority {
                let elected = relevant.iter().find(|o| {
                    majority.contains(&o.node)
                        && o.leader.is_some_and(|l| majority.contains(&l))
                        && o.leader != old_leader
                        && o.term > old_term
                });
                detail.insert(
                    "new_leader_on_majority".into(),
                    match elected {
                        Some(o) => json!({"leader": o.leader, "term": o.term, "seen_by": o.node, "at_ms": o.at_ms}),
                        None => Value::Null,
                    },
                );
            }
        }
        Undo::Readd { wiped } => {
            {
                let mut cluster = ctx.cluster.lock().await;
                if cluster.node(node).child.is_none() {
                    if let Err(e) = cluster.spawn(node) {
                        detail.insert("restart_error".into(), json!(e.to_string()));
                    }
                }
            }
            detail.insert("readd".into(), change_membership(ctx, node, true).await);
            detail.insert("rejoined_fresh".into(), json!(wiped));
            if let Some((_, _, view)) = ctx.leader().await {
                detail.insert("voters_after".into(), json!(view.voters));
            }
        }
        Undo::Shrink { spares, joined } => {
            let (removals, stopped) = shrink(ctx, &spares, &joined).await;
            detail.insert("remove".into(), removals);
            detail.insert("stopped_pids".into(), json!(stopped));
            if let Some((_, _, view)) = ctx.leader().await {
                detail.insert("voters_after".into(), json!(view.voters));
            }
        }
        Undo::ClearClock { installed, at } => {
            // A node that is down lost its offset with its process (it lives in memory).
            match set_clock_offset(ctx, node, 0).await {
                Ok(cleared) => {
                    let evidence = clock_jump_evidence(&installed, &cleared, at.elapsed());
                    detail.insert("clock_at_heal".into(), cleared);
                    detail.insert("cluster_time".into(), evidence);
                }
                Err(e) => {
                    detail.insert("clear_error".into(), json!(e));
                }
            }
        }
    }
    FaultEvent {
        kind: kind.name().to_owned(),
        node,
        pid,
        was_leader,
        start_ms,
        end_ms: ctx.now_ms(),
        nodes,
        detail: Value::Object(detail),
    }
}

/// Distinct (leader, term) pairs reported while the fault was active, with who
/// reported them first and when.
fn leaders_seen(observations: &[&Observation]) -> Value {
    let mut seen: BTreeMap<(u64, u64), (u64, BTreeSet<u64>)> = BTreeMap::new();
    for o in observations {
        if let Some(leader) = o.leader {
            seen.entry((leader, o.term))
                .or_insert((o.at_ms, BTreeSet::new()))
                .1
                .insert(o.node);
        }
    }
    json!(seen
        .iter()
        .map(|((leader, term), (at_ms, by))| json!({"leader": leader, "term": term, "first_ms": at_ms, "seen_by": by}))
        .collect::<Vec<_>>())
}
