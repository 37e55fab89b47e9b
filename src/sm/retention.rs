//! Retention of per-name records that outlive their use: a barrier nobody has
//! arrived at is *idle* but keeps its generation history (how recent generations
//! ended, which a waiter whose wait timed out reads); an idle record is removed
//! [`Replicated::IDLE_RECORD_RETENTION_MS`] after it became idle (by the replicated
//! tick, at most [`Replicated::IDLE_REMOVALS_PER_STEP`] per step). Locks,
//! semaphores and elections drop their record at once when nobody holds or awaits
//! it (`wait_queue::drop_if_idle`); keys, tasks, proposals, two-phase records,
//! sessions and request ids have their own rules (docs/security.md lists each
//! `Replicated` bound). The index is keyed by room so another room can join.
//!
//! The rule is part of format 8 (`sm::format`): a state still in the previous
//! format tracks nothing, so it stays what a node of the previous format holds; the
//! cluster's `Upgrade` command turns it on, marking every record idle at that point
//! idle since then. Like all of `sm`, this must not depend on storage, Raft, the
//! clock or the HTTP layer.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::sessions::Room;
use super::State;
use crate::limits::Replicated;

/// The idle records, by (room, name), with the cluster time each became idle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idle {
    since: BTreeMap<(Room, String), u64>,
    /// The same records ordered by when they became idle (the removal order).
    by_time: BTreeSet<(u64, Room, String)>,
}

impl Idle {
    /// Records that `name` of `room` is idle (`true`: since `now_ms`, unless it
    /// already was) or in use (`false`).
    fn mark(&mut self, room: Room, name: &str, idle: bool, now_ms: u64) {
        let key = (room, name.to_owned());
        match (idle, self.since.get(&key).copied()) {
            (true, None) => {
                self.by_time.insert((now_ms, room, name.to_owned()));
                self.since.insert(key, now_ms);
            }
            (false, Some(since)) => {
                self.by_time.remove(&(since, room, name.to_owned()));
                self.since.remove(&key);
            }
            _ => {}
        }
    }

    /// When the longest-idle record became idle.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.by_time.first().map(|(since, _, _)| *since)
    }

    /// How many records are idle.
    pub fn len(&self) -> usize {
        self.since.len()
    }

    pub fn is_empty(&self) -> bool {
        self.since.is_empty()
    }

    /// Takes the longest-idle record if it became idle at or before `cutoff_ms`.
    fn pop_due(&mut self, cutoff_ms: u64) -> Option<(Room, String)> {
        let first = self.by_time.first()?;
        if first.0 > cutoff_ms {
            return None;
        }
        let (_, room, name) = self.by_time.pop_first()?;
        let key = (room, name);
        self.since.remove(&key);
        Some(key)
    }
}

impl State {
    /// Whether `name` of `room` exists and keeps a record nobody uses (a barrier
    /// nobody has arrived at). Other rooms drop such records at once.
    fn record_is_idle(&self, room: Room, name: &str) -> Option<bool> {
        match room {
            Room::Barrier => self.barriers.get(name).map(|b| b.arrived.is_empty()),
            _ => None,
        }
    }

    /// Brings `name` of `room`'s idle mark up to date after a command touched it.
    /// Nothing before the cluster runs format 8.
    pub(in crate::sm) fn note_use(&mut self, room: Room, name: &str) {
        if !self.retains_idle_records() {
            return;
        }
        let idle = self.record_is_idle(room, name);
        let now = self.cluster_time_ms;
        self.idle.mark(room, name, idle.unwrap_or(false), now);
    }

    /// Removes the records idle for longer than the retention (a bounded number
    /// per step; the rest on the next).
    pub(in crate::sm) fn remove_idle_records(&mut self) {
        let cutoff = self
            .cluster_time_ms
            .saturating_sub(Replicated::IDLE_RECORD_RETENTION_MS);
        for _ in 0..Replicated::IDLE_REMOVALS_PER_STEP {
            let Some((room, name)) = self.idle.pop_due(cutoff) else {
                return;
            };
            if room == Room::Barrier {
                self.barriers.remove(&name);
            }
        }
    }

    /// When the next idle record falls due for removal.
    pub(in crate::sm) fn next_idle_removal_ms(&self) -> Option<u64> {
        self.idle
            .oldest_ms()
            .map(|since| since.saturating_add(Replicated::IDLE_RECORD_RETENTION_MS))
    }

    /// Starts tracking (the upgrade to format 8): every record idle now is idle
    /// from now. One pass over the records, once in a cluster's life.
    pub(in crate::sm) fn start_retention(&mut self) {
        let now = self.cluster_time_ms;
        let idle: Vec<String> = self
            .barriers
            .iter()
            .filter(|(_, barrier)| barrier.arrived.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        for name in idle {
            self.idle.mark(Room::Barrier, &name, true, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_kept_in_both_orders_and_popped_oldest_first() {
        let mut idle = Idle::default();
        idle.mark(Room::Barrier, "b", true, 20);
        idle.mark(Room::Semaphore, "s", true, 10);
        idle.mark(Room::Semaphore, "s", true, 30); // already idle: keeps 10
        assert_eq!(idle.oldest_ms(), Some(10));
        assert_eq!(idle.pop_due(9), None);
        assert_eq!(idle.pop_due(15), Some((Room::Semaphore, "s".into())));
        idle.mark(Room::Barrier, "b", false, 40);
        assert!(idle.is_empty());
        assert_eq!(idle.by_time.len(), 0);
    }
}
