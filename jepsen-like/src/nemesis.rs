//! Nemeses: seeded fault schedules against the cluster, each fault logged when
//! installed and healed, with proof that it fired.
//!
//! A schedule alternates a quiet spell (1–3 s) with one fault held for a while, then
//! healed. Process faults (`kill`, `pause`) signal a PID this harness started;
//! network faults set modes on the [`crate::proxy`] links between nodes (client
//! traffic never goes through them); `membership` removes a voter through the API
//! and adds it back; `clock-jump` sets a test-only offset of an hour or more on the
//! leader's wall clock (`POST /v1/debug/clock`, enabled by the harness's node
//! config) and clears it at heal. Every [`FaultEvent`] carries, besides its window, the leader at
//! install time, what the fault did (PIDs, links and their counters: connections
//! reset or held, bytes dropped) and what the nodes reported about leadership while
//! it was active (`GET /v1/cluster`, polled every 200 ms). Before [`run`] returns, every
//! link is open again and every node is a voter again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

use crate::cluster::Cluster;
use crate::proxy::{LinkMode, LinkStats};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    None,
    /// SIGKILL one node (the leader half of the time), restart it a moment later.
    Kill,
    /// SIGSTOP one node (the leader half of the time) across election timeouts and
    /// lease TTLs, then SIGCONT.
    Pause,
    /// Cut the current leader off from every peer, both directions.
    PartitionLeader,
    /// A random majority / minority split; the seed puts the leader on either side.
    PartitionMajority,
    /// Two halves that do not see each other, bridged by one random node that sees
    /// both (with 3 nodes: a — b — c).
    Bridge,
    /// Cut only the links from one node to the others (its own requests fail) or
    /// only those from the others to it (their requests to it fail).
    OneWay,
    /// Latency (some 5–300 ms per chunk) on every link, or on one node's links.
    Delay,
    /// Connections reset every few hundred ms on every link, or on one node's links.
    Reset,
    /// Remove a non-leader voter through the API, stop it, then add it back (with
    /// its data wiped half of the time, as a fresh node).
    Membership,
    /// Move the current leader's wall clock 1–2 h (ahead three times in four, else
    /// behind) through the test-only `POST /v1/debug/clock`, then clear it. Cluster
    /// time must not follow (issue #10, bug 6); the lease checkers judge expiry.
    /// Long tier / `mixed` only.
    ClockJump,
    /// A seeded mix of all of the above, now and then a network fault and a process
    /// fault at once.
    Mixed,
}

impl Nemesis {
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::None => "none",
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::PartitionLeader => "partition-leader",
            Nemesis::PartitionMajority => "partition-majority",
            Nemesis::Bridge => "bridge",
            Nemesis::OneWay => "one-way",
            Nemesis::Delay => "delay",
            Nemesis::Reset => "reset",
            Nemesis::Membership => "membership",
            Nemesis::ClockJump => "clock-jump",
            Nemesis::Mixed => "mixed",
        }
    }

    /// Faults that act on the proxy links.
    fn is_network(self) -> bool {
        matches!(
            self,
            Nemesis::PartitionLeader
                | Nemesis::PartitionMajority
                | Nemesis::Bridge
                | Nemesis::OneWay
                | Nemesis::Delay
                | Nemesis::Reset
        )
    }

    /// How long a fault of this kind is held (seeded).
    fn hold(self, rng: &mut SmallRng) -> Duration {
        let ms = match self {
            Nemesis::PartitionLeader
            | Nemesis::PartitionMajority
            | Nemesis::Bridge
            | Nemesis::OneWay => rng.gen_range(2_000..4_500),
            Nemesis::Delay | Nemesis::Reset => rng.gen_range(1_000..4_000),
            Nemesis::Membership => rng.gen_range(1_000..3_000),
            // Several lease TTLs (2–4 s in the workloads) under the wrong clock.
            Nemesis::ClockJump => rng.gen_range(3_000..8_000),
            _ => rng.gen_range(500..3_000),
        };
        Duration::from_millis(ms)
    }
}

/// What `mixed` chooses from.
const MIXED: [Nemesis; 10] = [
    Nemesis::Kill,
    Nemesis::Pause,
    Nemesis::PartitionLeader,
    Nemesis::PartitionMajority,
    Nemesis::Bridge,
    Nemesis::OneWay,
    Nemesis::Delay,
    Nemesis::Reset,
    Nemesis::Membership,
    Nemesis::ClockJump,
];

/// The size of a `clock-jump` offset: from one hour to two.
const CLOCK_JUMP_MS: std::ops::RangeInclusive<i64> = 3_600_000..=7_200_000;

/// One fault, as installed and healed.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    pub kind: String,
    /// The fault's main target: the node killed, paused, isolated, removed, the
    /// bridge, the one-way node, the first node of a minority.
    pub node: u64,
    /// The PID signalled by a process fault (`kill`, `pause`, the stop of a
    /// `membership` removal); 0 when no process was signalled.
    pub pid: u32,
    /// `node` was the leader when the fault was installed.
    pub was_leader: bool,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Every node the fault touched (links cut or delayed, processes hit).
    pub nodes: Vec<u64>,
    /// Kind-specific evidence: `leader_at_install`, `term_at_install`, partition
    /// `groups`, `links` with per-link counter deltas while the fault was active and
    /// their `link_totals`, `connections_reset_at_heal` (held by a blackhole), the
    /// membership before and after each change, `leaders_seen` while active…
    pub detail: Value,
}

/// One node's `GET /v1/cluster`, reduced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    state: String,
    leader: Option<u64>,
    term: u64,
    voters: BTreeSet<u64>,
    learners: BTreeSet<u64>,
}

fn parse_view(body: &Value) -> Option<View> {
    let members = body["members"].as_array()?;
    let ids = |role: &str| {
        members
            .iter()
            .filter(|m| m["role"] == role)
            .filter_map(|m| m["id"].as_u64())
            .collect()
    };
    Some(View {
        state: body["state"].as_str()?.to_owned(),
        leader: body["leader_id"].as_u64(),
        term: body["term"].as_u64().unwrap_or(0),
        voters: ids("voter"),
        learners: ids("learner"),
    })
}

/// A leadership observation: node `node` said this at `at_ms`.
#[derive(Debug, Clone, Serialize)]
struct Observation {
    at_ms: u64,
    node: u64,
    state: String,
    leader: Option<u64>,
    term: u64,
}

/// What the nemesis needs to act and observe.
struct Ctx {
    cluster: Arc<Mutex<Cluster>>,
    http: reqwest::Client,
    /// For membership changes, which may take tens of seconds.
    slow_http: reqwest::Client,
    urls: Vec<(u64, String)>,
    started: Instant,
}

impl Ctx {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn url(&self, id: u64) -> &str {
        &self.urls.iter().find(|(i, _)| *i == id).expect("node").1
    }

    fn ids(&self) -> Vec<u64> {
        self.urls.iter().map(|(id, _)| *id).collect()
    }

    /// Every answering node's view, polled concurrently (500 ms each at most).
    async fn views(&self) -> BTreeMap<u64, View> {
        let polls: Vec<_> = self
            .urls
            .iter()
            .map(|(id, url)| {
                let (id, request) = (*id, self.http.get(format!("{url}/v1/cluster")));
                tokio::spawn(async move {
                    let response =
                        tokio::time::timeout(Duration::from_millis(500), request.send()).await;
                    let body: Value = match response {
                        Ok(Ok(response)) => response.json().await.ok()?,
                        _ => return None,
                    };
                    Some((id, parse_view(&body)?))
                })
            })
            .collect();
        let mut views = BTreeMap::new();
        for poll in polls {
            if let Ok(Some((id, view))) = poll.await {
                views.insert(id, view);
            }
        }
        views
    }

    /// The leader and its term: a node that says it leads (highest term first),
    /// else the leader named by the highest-term view.
    async fn leader(&self) -> Option<(u64, u64, View)> {
        leader_of(&self.views().await)
    }
}

fn leader_of(views: &BTreeMap<u64, View>) -> Option<(u64, u64, View)> {
    if let Some((id, view)) = views
        .iter()
        .filter(|(_, v)| v.state == "leader")
        .max_by_key(|(_, v)| v.term)
    {
        return Some((*id, view.term, view.clone()));
    }
    let (_, view) = views
        .iter()
        .filter(|(_, v)| v.leader.is_some())
        .max_by_key(|(_, v)| v.term)?;
    let leader = view.leader?;
    Some((
        leader,
        view.term,
        views.get(&leader).unwrap_or(view).clone(),
    ))
}

/// An installed fault and how to undo it.
struct Installed {
    kind: Nemesis,
    node: u64,
    nodes: Vec<u64>,
    pid: u32,
    was_leader: bool,
    start_ms: u64,
    detail: Map<String, Value>,
    undo: Undo,
}

enum Undo {
    Restart,
    Resume,
    Links {
        pairs: Vec<(u64, u64)>,
        before: BTreeMap<(u64, u64), LinkStats>,
        /// For partitions: the side that holds a majority, to look for a new leader.
        majority: Option<Vec<u64>>,
        old_leader: Option<u64>,
        old_term: u64,
    },
    Readd {
        wiped: bool,
    },
    /// Clear the clock offset; `installed` is the node's clock view just after it
    /// was set (offset, offset wall clock, applied cluster time).
    ClearClock {
        installed: Value,
        at: Instant,
    },
}

/// Runs `nemesis` until `until` (a fault in progress is finished and healed),
/// recording events. On return every link is open and every node is a voter; the
/// caller still heals processes (`Cluster::heal`).
pub async fn run(
    nemesis: Nemesis,
    cluster: Arc<Mutex<Cluster>>,
    seed: u64,
    started: Instant,
    until: Instant,
) -> Vec<FaultEvent> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let (http, urls) = cluster.lock().await.probe();
    let ctx = Ctx {
        cluster,
        http,
        slow_http: reqwest::Client::builder()
            // Under the server's keep-alive idle timeout (`header_read_timeout_ms`, 30 s),
            // so a pooled connection is never reused just as the server closes it.
            .pool_idle_timeout(std::time::Duration::from_secs(10))
            .default_headers(crate::cluster::auth_headers())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        urls,
        started,
    };
    let mut events = Vec::new();
    if nemesis == Nemesis::None {
        tokio::time::sleep_until(until.into()).await;
        return events;
    }
    loop {
        let quiet = Duration::from_millis(rng.gen_range(1_000..3_000));
        if Instant::now() + quiet >= until {
            tokio::time::sleep_until(until.into()).await;
            break;
        }
        tokio::time::sleep(quiet).await;
        let kind = match nemesis {
            Nemesis::Mixed => *MIXED.choose(&mut rng).expect("kinds"),
            other => other,
        };
        // Mixed: a quarter of the network faults come with a kill or a pause.
        let with_process = nemesis == Nemesis::Mixed && kind.is_network() && rng.gen_bool(0.25);
        let hold = kind.hold(&mut rng);
        let Some(first) = install(&ctx, kind, &mut rng).await else {
            continue;
        };
        let second = if with_process {
            let process = *[Nemesis::Kill, Nemesis::Pause]
                .choose(&mut rng)
                .expect("kinds");
            install(&ctx, process, &mut rng).await
        } else {
            None
        };
        let observations = observe(&ctx, hold).await;
        if let Some(second) = second {
            events.push(heal(&ctx, second, &observations).await);
        }
        events.push(heal(&ctx, first, &observations).await);
    }
    if let Some(event) = restore(&ctx).await {
        events.push(event);
    }
    events
}

/// Installs one fault of `kind`; `None` if it could not be (no leader known for a
/// leader-targeted fault, no voter to remove…).
async fn install(ctx: &Ctx, kind: Nemesis, rng: &mut SmallRng) -> Option<Installed> {
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
            let candidates: Vec<u64> = view
                .voters
                .iter()
                .copied()
                .filter(|id| *id != leader)
                .collect();
            let node = *candidates.choose(rng)?;
            let wiped = rng.gen_bool(0.5);
            detail.insert("voters_before".into(), json!(view.voters));
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

fn cut_mode(rng: &mut SmallRng) -> LinkMode {
    if rng.gen_bool(0.5) {
        LinkMode::Blackhole
    } else {
        LinkMode::Refuse
    }
}

/// A random majority / minority split of `ids`; the leader, if known, goes to the
/// side drawn here (returned as `"majority"` or `"minority"`).
fn split_majority(
    ids: &[u64],
    leader: Option<u64>,
    rng: &mut SmallRng,
) -> (Vec<u64>, Vec<u64>, &'static str) {
    let mut shuffled = ids.to_vec();
    shuffled.shuffle(rng);
    let in_majority = rng.gen_bool(0.5);
    if let Some(at) = leader.and_then(|l| shuffled.iter().position(|id| *id == l)) {
        let want = if in_majority { 0 } else { shuffled.len() - 1 };
        shuffled.swap(at, want);
    }
    let minority = shuffled.split_off(shuffled.len() / 2 + 1);
    let side = if in_majority { "majority" } else { "minority" };
    (shuffled, minority, side)
}

/// The two halves a `bridge` connects: every other node, shuffled and split.
fn bridge_halves(ids: &[u64], bridge: u64, rng: &mut SmallRng) -> (Vec<u64>, Vec<u64>) {
    let mut rest: Vec<u64> = ids.iter().copied().filter(|id| *id != bridge).collect();
    rest.shuffle(rng);
    let right = rest.split_off(rest.len() / 2);
    (rest, right)
}

/// Every directed link between nodes of different `groups` (both directions).
fn cross_pairs(groups: &[Vec<u64>]) -> Vec<(u64, u64)> {
    let mut pairs = Vec::new();
    for (i, a) in groups.iter().enumerate() {
        for (j, b) in groups.iter().enumerate() {
            if i == j {
                continue;
            }
            for &from in a {
                for &to in b {
                    if from != to && !pairs.contains(&(from, to)) {
                        pairs.push((from, to));
                    }
                }
            }
        }
    }
    pairs
}

async fn set_links(ctx: &Ctx, pairs: &[(u64, u64)], mode: LinkMode) {
    let cluster = ctx.cluster.lock().await;
    for &(from, to) in pairs {
        cluster.proxy.set(from, to, mode);
    }
}

/// The undo record of a link fault; `before` holds every link's counters from just
/// before it was installed, so the deltas at heal show what the fault did.
fn links_undo(
    before: &BTreeMap<(u64, u64), LinkStats>,
    pairs: Vec<(u64, u64)>,
    majority: Option<Vec<u64>>,
    old_leader: Option<u64>,
    old_term: u64,
) -> Undo {
    let before = pairs.iter().map(|p| (*p, before[p])).collect();
    Undo::Links {
        pairs,
        before,
        majority,
        old_leader,
        old_term,
    }
}

/// Polls every node's view for `hold`, keeping each change of (state, leader, term).
async fn observe(ctx: &Ctx, hold: Duration) -> Vec<Observation> {
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
async fn heal(ctx: &Ctx, fault: Installed, observations: &[Observation]) -> FaultEvent {
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

/// Adds `node` as a voter (`add`) or removes it, through the leader, until the
/// leader's view shows it done (at most 45 s). Records every attempt.
async fn change_membership(ctx: &Ctx, node: u64, add: bool) -> Value {
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

/// After the schedule: every link open and every node a voter. An event only if
/// something had to be restored.
async fn restore(ctx: &Ctx) -> Option<FaultEvent> {
    let start_ms = ctx.now_ms();
    let reopened = ctx.cluster.lock().await.proxy.heal();
    let voters = ctx.leader().await.map(|(_, _, view)| view.voters);
    let missing: Vec<u64> = match &voters {
        Some(voters) => ctx
            .ids()
            .into_iter()
            .filter(|id| !voters.contains(id))
            .collect(),
        None => Vec::new(),
    };
    if reopened.is_empty() && missing.is_empty() {
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
        detail: json!({"links_reopened": reopened, "voters_before": voters, "readded": readded}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_split_covers_every_node_and_puts_the_leader_on_either_side() {
        for ids in [vec![1, 2, 3], vec![1, 2, 3, 4, 5]] {
            let mut sides = BTreeSet::new();
            let mut minorities = BTreeSet::new();
            for seed in 0..64 {
                let mut rng = SmallRng::seed_from_u64(seed);
                let (majority, minority, side) = split_majority(&ids, Some(2), &mut rng);
                assert_eq!(majority.len(), ids.len() / 2 + 1);
                let mut all: Vec<u64> = majority.iter().chain(&minority).copied().collect();
                all.sort();
                assert_eq!(all, ids);
                let holder = if majority.contains(&2) {
                    "majority"
                } else {
                    "minority"
                };
                assert_eq!(holder, side);
                sides.insert(side);
                minorities.insert(minority);
            }
            assert_eq!(sides.len(), 2, "the leader always landed on one side");
            assert!(
                minorities.len() > 2,
                "the split is not random: {minorities:?}"
            );
        }
    }

    #[test]
    fn a_bridge_sees_both_halves_which_do_not_see_each_other() {
        for ids in [vec![1, 2, 3], vec![1, 2, 3, 4, 5]] {
            let mut rng = SmallRng::seed_from_u64(3);
            let (left, right) = bridge_halves(&ids, 3, &mut rng);
            assert_eq!(left.len(), (ids.len() - 1) / 2);
            assert_eq!(left.len() + right.len(), ids.len() - 1);
            let pairs = cross_pairs(&[left.clone(), right.clone()]);
            assert_eq!(pairs.len(), 2 * left.len() * right.len());
            assert!(pairs.iter().all(|(a, b)| *a != 3 && *b != 3));
            for a in &left {
                for b in &right {
                    assert!(pairs.contains(&(*a, *b)) && pairs.contains(&(*b, *a)));
                }
            }
        }
    }

    #[test]
    fn isolating_one_node_cuts_its_links_both_ways_and_no_other() {
        let pairs = cross_pairs(&[vec![2], vec![1, 3]]);
        let mut sorted = pairs.clone();
        sorted.sort();
        assert_eq!(sorted, vec![(1, 2), (2, 1), (2, 3), (3, 2)]);
    }

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        let plan = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..5)
                .map(|_| {
                    let kind = *MIXED.choose(&mut rng).unwrap();
                    (
                        kind,
                        kind.hold(&mut rng),
                        split_majority(&[1, 2, 3], Some(1), &mut rng),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(plan(9), plan(9));
        assert_ne!(plan(9), plan(10));
    }
}
