//! Tests of the incremental wait-for graph against the full rebuild it replaced
//! (`reference`): the same graph as a rebuild from scratch after every step,
//! the same reachability between sessions, the same deadlock decisions, and cycles
//! that are real cycles of the old graph.

use crate::sm::sessions::SessionCommand;
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::reference::{self as lock_reference, Graph};
use super::wait_for::{Node, WaitFor};
use super::{LockCommand, LockMode, LockMode::Exclusive, LockMode::Shared, Locks};
use crate::sm::sessions::SessionId;
use crate::sm::test_support::{acquire_lock, one, run, session, with_sessions_ttl, withdraw_nth};
use crate::sm::LockOutcome;
use crate::sm::*;

const LOCKS: u8 = 3;
const SESSIONS: u64 = 5;

#[derive(Debug, Clone)]
enum Op {
    Acquire {
        lock: u8,
        session: u8,
        shared: bool,
        wait: bool,
        delay: bool,
    },
    /// Acquire presenting the last token lost to expiry on the lock (from a new
    /// session), to take a held-back lock back.
    Reclaim {
        lock: u8,
    },
    Release {
        lock: u8,
        session: u8,
    },
    Withdraw {
        lock: u8,
        nth: u8,
    },
    End {
        session: u8,
    },
    NewSession,
    Advance {
        ms: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..LOCKS, 0..SESSIONS as u8, any::<bool>(), prop::bool::weighted(0.9), prop::bool::weighted(0.2))
            .prop_map(|(lock, session, shared, wait, delay)| Op::Acquire { lock, session, shared, wait, delay }),
        1 => (0..LOCKS).prop_map(|lock| Op::Reclaim { lock }),
        3 => (0..LOCKS, 0..SESSIONS as u8).prop_map(|(lock, session)| Op::Release { lock, session }),
        1 => (0..LOCKS, 0..4u8).prop_map(|(lock, nth)| Op::Withdraw { lock, nth }),
        1 => (0..SESSIONS as u8).prop_map(|session| Op::End { session }),
        1 => Just(Op::NewSession),
        1 => (0..1_500u16).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn name(lock: u8) -> String {
    format!("L{lock}")
}

/// The live sessions, oldest first; ops pick among the newest few.
fn pick(state: &State, nth: u8) -> Option<SessionId> {
    let live: Vec<SessionId> = state.sessions.iter().map(|s| s.id).collect();
    live.iter().rev().nth(usize::from(nth)).copied()
}

fn command_for(state: &State, op: &Op) -> Option<Command> {
    Some(match op {
        Op::Acquire {
            lock,
            session,
            shared,
            wait,
            delay,
        } => Command::Lock(LockCommand::Acquire {
            name: name(*lock),
            session_id: pick(state, *session)?,
            mode: if *shared { Shared } else { Exclusive },
            wait: *wait,
            lock_delay_ms: if *delay { 700 } else { 0 },
            previous_token: None,
        }),
        Op::Reclaim { lock } => {
            let held_back = state.locks.get(&name(*lock))?;
            Command::Lock(LockCommand::Acquire {
                name: name(*lock),
                session_id: pick(state, 0)?,
                mode: Exclusive,
                wait: true,
                lock_delay_ms: 0,
                previous_token: Some(held_back.delayed_token),
            })
        }
        Op::Release { lock, session } => {
            let session_id = pick(state, *session)?;
            let hold = state.locks.get(&name(*lock))?.hold_of(session_id)?;
            Command::Lock(LockCommand::Release {
                name: name(*lock),
                session_id,
                fencing_token: hold.fencing_token,
            })
        }
        Op::Withdraw { lock, nth } => withdraw_nth(state, &name(*lock), *nth)?,
        Op::End { session } => Command::Session(SessionCommand::End {
            session_id: pick(state, *session)?,
        }),
        Op::NewSession => session(2_000),
        Op::Advance { .. } => return None,
    })
}

/// Sessions reachable from each session in the reference graph (excluding itself).
fn reference_reach(graph: &Graph) -> BTreeMap<SessionId, BTreeSet<SessionId>> {
    graph
        .keys()
        .map(|&from| {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<SessionId> = graph[&from].iter().copied().collect();
            while let Some(node) = stack.pop() {
                if seen.insert(node) {
                    stack.extend(graph.get(&node).into_iter().flatten());
                }
            }
            seen.remove(&from);
            (from, seen)
        })
        .filter(|(_, reach)| !reach.is_empty())
        .collect()
}

/// Sessions reachable from each session in the incremental graph (excluding itself).
fn incremental_reach(graph: &WaitFor) -> BTreeMap<SessionId, BTreeSet<SessionId>> {
    graph
        .sources()
        .into_iter()
        .filter_map(|node| match node {
            Node::Session(id) => Some(id),
            Node::Lock(_) => None,
        })
        .map(|from| {
            let mut seen = BTreeSet::new();
            let mut stack = graph.successors(&Node::Session(from));
            while let Some(node) = stack.pop() {
                if seen.insert(node.clone()) {
                    stack.extend(graph.successors(&node));
                }
            }
            let sessions: BTreeSet<SessionId> = seen
                .into_iter()
                .filter_map(|node| match node {
                    Node::Session(id) if id != from => Some(id),
                    _ => None,
                })
                .collect();
            (from, sessions)
        })
        .filter(|(_, reach)| !reach.is_empty())
        .collect()
}

/// Checks the incremental graph against the reference in `locks`.
fn check_graph(state: &State) -> Result<(), TestCaseError> {
    let locks = &state.locks;
    prop_assert_eq!(
        locks.graph(),
        &WaitFor::rebuild(locks),
        "incremental != rebuilt"
    );
    let reference = lock_reference::wait_for_graph(locks);
    prop_assert_eq!(
        incremental_reach(locks.graph()),
        reference_reach(&reference),
        "reachability differs"
    );
    for session in state.sessions.iter().map(|s| s.id) {
        for lock in 0..LOCKS {
            let name = name(lock);
            if locks
                .get(&name)
                .is_none_or(|l| l.hold_of(session).is_some())
            {
                continue; // the deadlock check is never reached for these
            }
            let ours = locks.find_cycle(&name, session);
            let theirs = lock_reference::deadlock_cycle(locks, &name, session);
            prop_assert_eq!(ours.is_some(), theirs.is_some(), "{} on {}", session, name);
            if let Some(cycle) = ours {
                check_cycle(locks, &reference, &name, session, &cycle)?;
            }
        }
    }
    Ok(())
}

/// A reported cycle starts and ends at `session`, starts with one of its blockers
/// and follows edges of the reference graph.
fn check_cycle(
    locks: &Locks,
    reference: &Graph,
    name: &str,
    session: SessionId,
    cycle: &[SessionId],
) -> Result<(), TestCaseError> {
    prop_assert!(cycle.len() >= 3, "{:?}", cycle);
    prop_assert_eq!(cycle[0], session);
    prop_assert_eq!(*cycle.last().unwrap(), session);
    let inner: BTreeSet<SessionId> = cycle[1..].iter().copied().collect();
    prop_assert_eq!(
        inner.len(),
        cycle.len() - 1,
        "not a simple cycle: {:?}",
        cycle
    );
    let blockers = lock_reference::blockers(locks, name, session);
    prop_assert!(
        blockers.contains(&cycle[1]),
        "{:?} not from {:?}",
        cycle,
        blockers
    );
    for pair in cycle[1..].windows(2) {
        let waits = reference
            .get(&pair[0])
            .is_some_and(|to| to.contains(&pair[1]));
        prop_assert!(
            waits,
            "{:?}: {} does not wait for {}",
            cycle,
            pair[0],
            pair[1]
        );
    }
    Ok(())
}

/// Applies `commands` deciding deadlocks with the reference (`true`) or not.
fn run_with(state: &mut State, time: u64, commands: Vec<Command>, reference: bool) -> Vec<Outcome> {
    lock_reference::set_enabled(reference);
    let outcomes = run(state, time, commands);
    lock_reference::set_enabled(false);
    outcomes
}

/// A deadlock's cycle may differ between the two searches; everything else may not.
fn without_cycle(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Lock(LockOutcome::Deadlock { .. }) => {
            Outcome::Lock(LockOutcome::Deadlock { cycle: Vec::new() })
        }
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random acquire / reclaim / release / withdraw / session-end / expiry
    /// sequences: after every step the incremental graph equals a rebuild, reaches
    /// what the old graph reaches and refuses exactly the waits the old one
    /// refused; the same run decided by the old code gives the same outcomes and the
    /// same state; a decoded state rebuilds the same graph.
    #[test]
    fn the_incremental_wait_for_graph_matches_the_full_rebuild(ops in proptest::collection::vec(op(), 1..120)) {
        let mut state = State::default();
        run(&mut state, 0, (0..SESSIONS).map(|_| session(2_000)).collect());
        let mut old = state.clone();
        let mut time = 0u64;
        for op in &ops {
            if let Op::Advance { ms } = op {
                time += u64::from(*ms);
            }
            let commands: Vec<Command> = command_for(&state, op).into_iter().collect();
            let ours = run_with(&mut state, time, commands.clone(), false);
            let theirs = run_with(&mut old, time, commands, true);
            prop_assert_eq!(
                ours.into_iter().map(without_cycle).collect::<Vec<_>>(),
                theirs.into_iter().map(without_cycle).collect::<Vec<_>>()
            );
            prop_assert_eq!(&state, &old);
            check_graph(&state)?;
        }
        let decoded: State = crate::codec::decode(&crate::codec::encode(&state).unwrap()).unwrap();
        prop_assert_eq!(decoded.locks.graph(), state.locks.graph());
    }
}

fn acquire(name: &str, session_id: SessionId, mode: LockMode) -> Command {
    acquire_lock(name, session_id, mode, true)
}

#[test]
fn the_graph_is_not_in_the_snapshot_and_a_decoded_state_rebuilds_it() {
    let mut state = with_sessions_ttl(3, 10_000);
    run(
        &mut state,
        1,
        vec![
            acquire("A", 1, Shared),
            acquire("A", 2, Shared),
            acquire("A", 3, Exclusive),
            acquire("B", 3, Exclusive),
            acquire("B", 1, Exclusive),
        ],
    );
    let bytes = crate::codec::encode(&state).unwrap();
    let mut bare = state.clone();
    let table: BTreeMap<String, locks::Lock> = state
        .locks
        .iter()
        .map(|(name, lock)| (name.clone(), lock.clone()))
        .collect();
    assert_eq!(
        crate::codec::encode(&table).unwrap(),
        crate::codec::encode(&state.locks).unwrap(),
        "the lock table encodes as the bare map it always was"
    );
    let decoded: State = crate::codec::decode(&bytes).unwrap();
    assert_eq!(decoded, state);
    assert_eq!(decoded.locks.graph(), &WaitFor::rebuild(&state.locks));
    assert!(!state.locks.graph().sources().is_empty());
    // And the rebuilt graph keeps deciding as the original does.
    let a = one(&mut bare, 2, acquire("B", 2, Exclusive));
    let mut decoded = decoded;
    assert_eq!(one(&mut decoded, 2, acquire("B", 2, Exclusive)), a);
    assert_eq!(decoded, bare);
}

/// With one session waiting twice on a lock (in both modes), the new waiter's
/// search starts from the last waiter of another session, so a cycle through the
/// session's own earlier waiter is still found, as the old graph found it.
#[test]
fn a_session_waiting_in_both_modes_on_one_lock_is_refused_like_before() {
    let mut state = with_sessions_ttl(3, 10_000);
    run(&mut state, 1, vec![acquire("L", 1, Exclusive)]);
    one(&mut state, 2, acquire("L", 2, Exclusive));
    one(&mut state, 3, acquire("L", 3, Exclusive));
    let refused = one(&mut state, 4, acquire("L", 2, Shared));
    assert_eq!(
        refused,
        Outcome::Lock(LockOutcome::Deadlock {
            cycle: vec![2, 3, 2]
        }),
        "3 waits behind 2, and 2 would wait behind 3"
    );
    let mut old = with_sessions_ttl(3, 10_000);
    run(&mut old, 1, vec![acquire("L", 1, Exclusive)]);
    one(&mut old, 2, acquire("L", 2, Exclusive));
    one(&mut old, 3, acquire("L", 3, Exclusive));
    let theirs = run_with(&mut old, 4, vec![acquire("L", 2, Shared)], true);
    assert_eq!(theirs, vec![refused]);
}
