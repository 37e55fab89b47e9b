//! The wait-for graph of locks, kept incrementally, and the cycle search that
//! refuses deadlocks.
//!
//! Nodes are sessions and locks. A lock's head waiter points to the lock, the lock
//! points to each of its holders, and every other waiter points to the waiter
//! directly ahead of it (an edge between two waiters of one session is left out).
//! "Waits for the one ahead" is transitive, so a session reaches exactly the
//! sessions it reached when every waiter pointed to every holder and every waiter
//! ahead of it, with one edge per waiter and per hold instead of O(waiters²)
//! (`graph_tests` checks both against a full rebuild). Edges between the same
//! two nodes carry a multiplicity: several locks can give the same pair.
//!
//! The graph changes only where a lock changes: a waiter joins or leaves, a hold is
//! granted or released, so each of those costs O(1) edge updates, and a cycle check
//! walks only what the new waiter can reach (visited set and parent pointers, no
//! path copies). Per session, it also indexes the locks the session holds or awaits,
//! so a session's end touches only those locks.
//!
//! All of it is derived from the lock table: never serialized, rebuilt when a state
//! is decoded (`Locks`' `Deserialize`). It depends on nothing but the lock records.

use std::collections::{BTreeMap, BTreeSet};

use super::Lock;
use crate::sm::sessions::SessionId;

/// A node of the wait-for graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Session(SessionId),
    Lock(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitFor {
    /// node → (node it waits for → multiplicity).
    edges: BTreeMap<Node, BTreeMap<Node, u32>>,
    /// The number of edges into each session (multiplicities summed).
    into_session: BTreeMap<SessionId, u32>,
    /// session → (lock it holds or awaits → holds plus waiters there).
    by_session: BTreeMap<SessionId, BTreeMap<String, u32>>,
}

/// The edge of the waiter at `position` of `lock` (named `name`), if it has one.
pub fn waiter_edge(name: &str, lock: &Lock, position: usize) -> Option<(Node, Node)> {
    let session = lock.waiters.get(position)?.session_id;
    let to = match position.checked_sub(1) {
        None => Node::Lock(name.to_owned()),
        Some(ahead) => {
            let ahead = lock.waiters[ahead].session_id;
            if ahead == session {
                return None;
            }
            Node::Session(ahead)
        }
    };
    Some((Node::Session(session), to))
}

impl WaitFor {
    /// The graph of `locks` built from scratch (used after decoding, and by tests as
    /// the reference for the incremental one).
    pub fn rebuild<'a>(locks: impl IntoIterator<Item = (&'a String, &'a Lock)>) -> Self {
        let mut graph = Self::default();
        for (name, lock) in locks {
            for hold in &lock.holders {
                graph.add_hold(name, hold.session_id);
            }
            for (position, waiter) in lock.waiters.iter().enumerate() {
                graph.touch(waiter.session_id, name, true);
                graph.add_edge(waiter_edge(name, lock, position));
            }
        }
        graph
    }

    pub fn add_hold(&mut self, name: &str, session: SessionId) {
        self.touch(session, name, true);
        self.add_edge(Some((Node::Lock(name.to_owned()), Node::Session(session))));
    }

    pub fn remove_hold(&mut self, name: &str, session: SessionId) {
        self.touch(session, name, false);
        self.remove_edge(Some((Node::Lock(name.to_owned()), Node::Session(session))));
    }

    /// Counts one more (`more`) or one fewer hold or waiter of `session` on `name`.
    pub fn touch(&mut self, session: SessionId, name: &str, more: bool) {
        let names = self.by_session.entry(session).or_default();
        if more {
            *names.entry(name.to_owned()).or_default() += 1;
        } else if let Some(count) = names.get_mut(name) {
            *count -= 1;
            if *count == 0 {
                names.remove(name);
            }
        }
        if names.is_empty() {
            self.by_session.remove(&session);
        }
    }

    pub fn add_edge(&mut self, edge: Option<(Node, Node)>) {
        let Some((from, to)) = edge else { return };
        if let Node::Session(session) = to {
            *self.into_session.entry(session).or_default() += 1;
        }
        *self.edges.entry(from).or_default().entry(to).or_default() += 1;
    }

    pub fn remove_edge(&mut self, edge: Option<(Node, Node)>) {
        let Some((from, to)) = edge else { return };
        if let Node::Session(session) = to {
            decrement(&mut self.into_session, &session);
        }
        if let Some(targets) = self.edges.get_mut(&from) {
            decrement(targets, &to);
            if targets.is_empty() {
                self.edges.remove(&from);
            }
        }
    }

    /// The locks `session` holds or awaits.
    pub fn locks_of(&self, session: SessionId) -> Vec<String> {
        self.by_session
            .get(&session)
            .map_or(Vec::new(), |names| names.keys().cloned().collect())
    }

    /// Whether `session` waits on `name` (holds no hold of it but is counted there).
    pub fn waits_on(&self, session: SessionId, name: &str, holds: bool) -> bool {
        !holds
            && self
                .by_session
                .get(&session)
                .is_some_and(|names| names.contains_key(name))
    }

    /// If `session` starting to wait for `start` closes a cycle, the path from
    /// `start` to `session`. Visits each node at most once.
    pub fn find_path(&self, session: SessionId, start: Node) -> Option<Vec<Node>> {
        // Nobody waits for `session`: no path can lead back to it.
        if !self.into_session.contains_key(&session) {
            return None;
        }
        let target = Node::Session(session);
        let mut parent: BTreeMap<Node, Node> = BTreeMap::new();
        let mut seen: BTreeSet<Node> = BTreeSet::from([start.clone()]);
        let mut stack = vec![start.clone()];
        let mut found = start == target;
        while let (false, Some(node)) = (found, stack.pop()) {
            for next in self.edges.get(&node).into_iter().flat_map(BTreeMap::keys) {
                #[cfg(test)]
                steps::add(1);
                if seen.insert(next.clone()) {
                    parent.insert(next.clone(), node.clone());
                    if *next == target {
                        found = true;
                        break;
                    }
                    stack.push(next.clone());
                }
            }
        }
        if !found {
            return None;
        }
        // Walk the parent pointers back from `session` to `start`.
        let mut path = vec![target];
        while let Some(previous) = parent.get(path.last().expect("not empty")) {
            path.push(previous.clone());
        }
        path.reverse();
        Some(path)
    }
}

#[cfg(test)]
impl WaitFor {
    /// The nodes `node` waits for (test-only).
    pub fn successors(&self, node: &Node) -> Vec<Node> {
        self.edges
            .get(node)
            .map_or(Vec::new(), |targets| targets.keys().cloned().collect())
    }

    /// Every node with an edge out (test-only).
    pub fn sources(&self) -> Vec<Node> {
        self.edges.keys().cloned().collect()
    }
}

fn decrement<K: Ord>(counts: &mut BTreeMap<K, u32>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// Test-only count of the graph steps (edges followed) per cycle check.
#[cfg(test)]
pub(super) mod steps {
    use std::cell::Cell;

    thread_local! {
        static CURRENT: Cell<usize> = const { Cell::new(0) };
    }

    pub fn add(steps: usize) {
        CURRENT.with(|current| current.set(current.get() + steps));
    }

    /// Steps since the last take; resets the count.
    pub fn take() -> usize {
        CURRENT.with(|current| current.replace(0))
    }
}
