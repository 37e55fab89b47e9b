//! The link arithmetic of the network faults: which directed links a partition,
//! a bridge or an isolation cuts, and the undo record that counts what they did.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::{Ctx, Undo};
use crate::proxy::{LinkMode, LinkStats};

pub(super) fn cut_mode(rng: &mut SmallRng) -> LinkMode {
    if rng.gen_bool(0.5) {
        LinkMode::Blackhole
    } else {
        LinkMode::Refuse
    }
}

/// A random majority / minority split of `ids`; the leader, if known, goes to the
/// side drawn here (returned as `"majority"` or `"minority"`).
pub(super) fn split_majority(
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
pub(super) fn bridge_halves(ids: &[u64], bridge: u64, rng: &mut SmallRng) -> (Vec<u64>, Vec<u64>) {
    let mut rest: Vec<u64> = ids.iter().copied().filter(|id| *id != bridge).collect();
    rest.shuffle(rng);
    let right = rest.split_off(rest.len() / 2);
    (rest, right)
}

/// Every directed link between nodes of different `groups` (both directions).
pub(super) fn cross_pairs(groups: &[Vec<u64>]) -> Vec<(u64, u64)> {
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

pub(super) async fn set_links(ctx: &Ctx, pairs: &[(u64, u64)], mode: LinkMode) {
    let cluster = ctx.cluster.lock().await;
    for &(from, to) in pairs {
        cluster.proxy.set(from, to, mode);
    }
}

/// The undo record of a link fault; `before` holds every link's counters from just
/// before it was installed, so the deltas at heal show what the fault did.
pub(super) fn links_undo(
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
