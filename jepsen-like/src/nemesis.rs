//! Nemeses: seeded fault schedules against the cluster, each fault logged when
//! installed and healed, with the PID it hit as proof that it fired.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::cluster::Cluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    None,
    /// SIGKILL one node (the leader half of the time), restart it a moment later.
    Kill,
    /// SIGSTOP one node (the leader half of the time) across election timeouts and
    /// lease TTLs, then SIGCONT.
    Pause,
}

impl Nemesis {
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::None => "none",
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
        }
    }
}

/// One fault, as installed and healed.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    pub kind: String,
    pub node: u64,
    pub pid: u32,
    pub was_leader: bool,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Runs `nemesis` until `stop`, recording events; the caller heals afterwards.
pub async fn run(
    nemesis: Nemesis,
    cluster: Arc<Mutex<Cluster>>,
    seed: u64,
    started: std::time::Instant,
    until: std::time::Instant,
) -> Vec<FaultEvent> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut events = Vec::new();
    let now_ms = || started.elapsed().as_millis() as u64;
    if nemesis == Nemesis::None {
        tokio::time::sleep_until(until.into()).await;
        return events;
    }
    loop {
        let quiet = Duration::from_millis(rng.gen_range(1_000..3_000));
        if std::time::Instant::now() + quiet >= until {
            tokio::time::sleep_until(until.into()).await;
            return events;
        }
        tokio::time::sleep(quiet).await;
        let leader = cluster.lock().await.leader_hint().await;
        let ids = cluster.lock().await.ids();
        let target = match leader {
            Some(leader) if rng.gen_bool(0.5) => leader,
            _ => ids[rng.gen_range(0..ids.len())],
        };
        let hold = Duration::from_millis(rng.gen_range(500..3_000));
        let start_ms = now_ms();
        let pid = match nemesis {
            Nemesis::Kill => cluster.lock().await.kill(target),
            Nemesis::Pause => cluster.lock().await.pause(target, true),
            Nemesis::None => None,
        };
        let Some(pid) = pid else { continue };
        tokio::time::sleep(hold).await;
        {
            let mut cluster = cluster.lock().await;
            match nemesis {
                Nemesis::Kill => {
                    let _ = cluster.spawn(target);
                }
                Nemesis::Pause => {
                    cluster.pause(target, false);
                }
                Nemesis::None => {}
            }
        }
        let kind = format!("{nemesis:?}").to_lowercase();
        events.push(FaultEvent {
            kind,
            node: target,
            pid,
            was_leader: leader == Some(target),
            start_ms,
            end_ms: now_ms(),
        });
    }
}
