//! Nemeses: seeded fault schedules against the cluster, each fault logged when
//! installed and healed, with proof that it fired.
//!
//! A schedule alternates a quiet spell (1–3 s) with one fault held for a while, then
//! healed. Process faults (`kill`, `pause`) signal a PID this harness started;
//! network faults set modes on the [`crate::proxy`] links between nodes (client
//! traffic never goes through them); `membership` either grows the cluster with
//! real nodes — one or two fresh spare processes (ids after the founding nodes)
//! started with `serve --join`, voters while the fault holds, then removed with
//! `DELETE /v1/cluster/members/{id}`, stopped and wiped — or removes a founding
//! voter through the API, stops it and adds it back; `clock-jump` sets a test-only offset of an hour or more on the
//! leader's wall clock (`POST /v1/debug/clock`, enabled by the harness's node
//! config) and clears it at heal. Every [`FaultEvent`] carries, besides its window, the leader at
//! install time, what the fault did (PIDs, links and their counters: connections
//! reset or held, bytes dropped) and what the nodes reported about leadership while
//! it was active (`GET /v1/cluster`, polled every 200 ms). Before [`run`] returns, every
//! link is open again, every founding node is a voter again and no spare is a
//! member or running.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::cluster::Cluster;
use crate::proxy::LinkStats;

mod faults;
mod links;
mod membership;
#[cfg(test)]
mod tests;

use faults::{heal, install, observe};
use membership::restore;

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
    /// Half of the time grow the cluster with one or two real nodes: fresh spare
    /// processes that join with `serve --join` (half of those times one of them is
    /// then made leader), hold, then are removed with `DELETE`, stopped and wiped.
    /// Otherwise remove a non-leader founding voter through the API, stop it, then
    /// add it back (with its data wiped half of the time, as a fresh node).
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

    /// The spare nodes a cluster keeps for this nemesis (ids after the founding
    /// ones): `membership` grows the cluster with them.
    pub fn spares(self) -> u64 {
        match self {
            Nemesis::Membership | Nemesis::Mixed => 2,
            _ => 0,
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
    /// Every node's base URL, spares included.
    urls: Vec<(u64, String)>,
    /// The founding nodes, which faults target.
    founding: Vec<u64>,
    /// The spares `membership` grows the cluster with.
    spares: Vec<u64>,
    started: Instant,
}

impl Ctx {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn url(&self, id: u64) -> &str {
        &self.urls.iter().find(|(i, _)| *i == id).expect("node").1
    }

    /// The founding nodes.
    fn ids(&self) -> Vec<u64> {
        self.founding.clone()
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
    /// Remove these spares (they joined), stop and wipe them.
    Shrink {
        spares: Vec<u64>,
        /// Per spare: how its join went at install.
        joined: Vec<membership::Joined>,
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
    let ((http, urls), founding, spares) = {
        let cluster = cluster.lock().await;
        (cluster.probe(), cluster.ids(), cluster.spare_ids())
    };
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
        founding,
        spares,
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
