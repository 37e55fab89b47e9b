//! Test-only reference for deadlock detection: the wait-for graph rebuilt in full
//! on every waiting acquire, as it was before the incremental graph (`wait_for`).
//! Every waiter points to every holder and every waiter ahead of it on its lock.
//! The tests compare the incremental graph's reachability and deadlock decisions
//! with this one, and the latency test measures both. Depends only on the lock table.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use super::Locks;
use crate::sm::sessions::SessionId;

pub type Graph = BTreeMap<SessionId, BTreeSet<SessionId>>;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
}

/// Whether acquires on this thread decide deadlocks with the reference.
pub fn enabled() -> bool {
    ENABLED.with(Cell::get)
}

/// Makes acquires on this thread use the reference (`true`) or the incremental
/// graph (`false`).
pub fn set_enabled(on: bool) {
    ENABLED.with(|enabled| enabled.set(on));
}

/// The wait-for graph of all waiting sessions: session → sessions it waits for.
pub fn wait_for_graph(locks: &Locks) -> Graph {
    let mut graph = Graph::new();
    for lock in locks.iter().map(|(_, lock)| lock) {
        for (position, waiter) in lock.waiters.iter().enumerate() {
            let edges = graph.entry(waiter.session_id).or_default();
            edges.extend(lock.holders.iter().map(|hold| hold.session_id));
            edges.extend(
                lock.waiters
                    .iter()
                    .take(position)
                    .map(|ahead| ahead.session_id),
            );
            edges.remove(&waiter.session_id);
        }
    }
    graph
}

/// Sessions `session` would wait for if queued on `name` now: every holder and
/// every waiter of it.
pub fn blockers(locks: &Locks, name: &str, session: SessionId) -> BTreeSet<SessionId> {
    locks.get(name).map_or(BTreeSet::new(), |lock| {
        lock.holders
            .iter()
            .map(|hold| hold.session_id)
            .chain(lock.waiters.iter().map(|waiter| waiter.session_id))
            .filter(|other| *other != session)
            .collect()
    })
}

/// The old decision: the full rebuild, then a depth-first search with path copies.
pub fn deadlock_cycle(locks: &Locks, name: &str, session: SessionId) -> Option<Vec<SessionId>> {
    find_cycle(
        &wait_for_graph(locks),
        session,
        &blockers(locks, name, session),
    )
}

/// If `session` starting to wait for `blockers` closes a cycle, the cycle (starting
/// and ending at `session`).
pub fn find_cycle(
    graph: &Graph,
    session: SessionId,
    blockers: &BTreeSet<SessionId>,
) -> Option<Vec<SessionId>> {
    let mut visited = BTreeSet::new();
    for &start in blockers {
        let mut stack = vec![(start, vec![session, start])];
        while let Some((node, path)) = stack.pop() {
            if node == session {
                return Some(path);
            }
            if !visited.insert(node) {
                continue;
            }
            for &next in graph.get(&node).into_iter().flatten() {
                let mut longer = path.clone();
                longer.push(next);
                stack.push((next, longer));
            }
        }
    }
    None
}
