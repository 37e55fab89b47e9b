//! Scale tests of deadlock detection: a waiting acquire's cycle check must cost what
//! the new waiter can reach, not the number of waiters queued elsewhere. Steps
//! (graph edges followed) are counted, never timed; the `#[ignore]`d latency test
//! prints apply times per waiting acquire, new against the old full rebuild.

use crate::sm::sessions::SessionCommand;
use std::time::{Duration, Instant};

use super::reference as lock_reference;
use super::wait_for::steps;
use super::{LockMode, LockMode::Exclusive, LockMode::Shared};
use crate::sm::sessions::SessionId;
use crate::sm::test_support::{acquire_lock, one, open_sessions, run, session, withdraw_lock};
use crate::sm::{Command, Outcome, State};
use crate::sm::{LockOutcome, SessionOutcome};

const FOREVER_MS: u64 = 1_000_000_000;
const HOLDERS: u64 = 100;
const CHAIN: usize = 10;
/// A waiter's check walks its lock's chain (10), the lock and its two shared
/// holders; a deadlock's walks two such chains. A full walk would be ~10,000.
const MAX_STEPS_PER_ACQUIRE: usize = 2 * (CHAIN + 3) + 4;

fn acquire(name: &str, session_id: SessionId, mode: LockMode) -> Command {
    acquire_lock(name, session_id, mode, true)
}

fn lock(i: usize) -> String {
    format!("lock-{i}")
}

/// The two sessions holding lock `i` shared (distinct: one is even, one odd mod 2).
fn holders_of(holders: &[SessionId], i: usize) -> [SessionId; 2] {
    let n = holders.len();
    [holders[i % n], holders[(i * 7 + 1) % n]]
}

/// `waiters` waiters in chains of `CHAIN` across `waiters / CHAIN` locks, each lock
/// held shared by two of `HOLDERS` holders (so holders share many locks). Returns
/// the state and the holders.
fn chains(waiters: usize) -> (State, Vec<SessionId>) {
    let mut state = State::default();
    let sessions = HOLDERS as usize + waiters;
    let ids = open_sessions(&mut state, 1, sessions, FOREVER_MS);
    let (holders, waiting) = ids.split_at(HOLDERS as usize);
    let locks = waiters.div_ceil(CHAIN);
    let grants = (0..locks)
        .flat_map(|i| holders_of(holders, i).map(|holder| acquire(&lock(i), holder, Shared)))
        .collect();
    run(&mut state, 2, grants);
    let queued = waiting
        .iter()
        .enumerate()
        .map(|(n, &waiter)| acquire(&lock(n % locks), waiter, Exclusive))
        .collect();
    for outcome in run(&mut state, 3, queued) {
        assert!(
            matches!(outcome, Outcome::Lock(LockOutcome::Queued { .. })),
            "{outcome:?}"
        );
    }
    (state, holders.to_vec())
}

/// A lock `holder` does not hold, picked by `n`.
fn not_held_by(holders: &[SessionId], locks: usize, holder: SessionId, n: usize) -> usize {
    (0..locks)
        .map(|k| (n * 13 + 5 + k) % locks)
        .find(|&i| !holders_of(holders, i).contains(&holder))
        .expect("some lock is not held by every holder")
}

fn withdraw(name: &str, outcome: &Outcome) -> Command {
    let Outcome::Lock(LockOutcome::Queued { waiter_id }) = outcome else {
        panic!("not queued: {outcome:?}")
    };
    withdraw_lock(name, *waiter_id)
}

#[test]
fn a_waiting_acquire_costs_the_steps_of_its_own_chain_not_of_all_waiters() {
    const WAITERS: usize = 10_000;
    const MEASURED: usize = 1_000;
    let (mut state, holders) = chains(WAITERS);
    let locks = WAITERS / CHAIN;
    steps::take();
    // Holders (whom others wait for, so the check cannot be skipped) queue on a
    // lock they do not hold, then withdraw.
    let mut most = 0;
    for n in 0..MEASURED {
        let holder = holders[n % holders.len()];
        let name = lock(not_held_by(&holders, locks, holder, n));
        let queued = one(&mut state, 4, acquire(&name, holder, Exclusive));
        let taken = steps::take();
        assert!(taken > CHAIN, "the check walked the chain ({taken} steps)");
        most = most.max(taken);
        one(&mut state, 4, withdraw(&name, &queued));
    }
    assert!(
        most <= MAX_STEPS_PER_ACQUIRE,
        "{most} steps in one acquire with {WAITERS} waiters"
    );

    // A deadlock across two chains: a holder of lock A waits on lock B, then a
    // holder of B asks for A.
    let a = 2;
    let [holder_a, _] = holders_of(&holders, a);
    let b = not_held_by(&holders, locks, holder_a, 0);
    let [holder_b, _] = holders_of(&holders, b);
    assert!(!holders_of(&holders, a).contains(&holder_b));
    let queued = one(&mut state, 5, acquire(&lock(b), holder_a, Exclusive));
    assert!(
        matches!(queued, Outcome::Lock(LockOutcome::Queued { .. })),
        "{queued:?}"
    );
    steps::take();
    let refused = one(&mut state, 5, acquire(&lock(a), holder_b, Exclusive));
    let taken = steps::take();
    assert_eq!(
        refused,
        Outcome::Lock(LockOutcome::Deadlock {
            cycle: vec![holder_b, holder_a, holder_b]
        })
    );
    assert!(
        taken <= MAX_STEPS_PER_ACQUIRE,
        "{taken} steps for the deadlock"
    );
    eprintln!("scale: {WAITERS} waiters; at most {most} steps per waiting acquire, {taken} for a deadlock");
    assert_eq!(
        state.locks.graph(),
        &super::wait_for::WaitFor::rebuild(&state.locks)
    );

    // A session's end visits only its own locks: ending every holder grants the
    // heads of all chains.
    let ends = holders
        .iter()
        .map(|&session_id| Command::Session(SessionCommand::End { session_id }))
        .collect();
    run(&mut state, 6, ends);
    assert_eq!(
        state
            .locks
            .iter()
            .filter(|(_, l)| l.holders.len() == 1)
            .count(),
        locks
    );
}

/// The median apply time of `samples` waiting acquires (each withdrawn after).
fn time_acquires(
    state: &mut State,
    samples: usize,
    reference: bool,
    pick: impl Fn(usize) -> (String, SessionId),
) -> Duration {
    let mut times: Vec<Duration> = (0..samples)
        .map(|n| {
            let (name, session) = pick(n);
            lock_reference::set_enabled(reference);
            let started = Instant::now();
            let queued = one(state, 4, acquire(&name, session, Exclusive));
            let took = started.elapsed();
            lock_reference::set_enabled(false);
            one(state, 4, withdraw(&name, &queued));
            took
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Rerun: `cargo test --release --lib locks::scale_tests::latency -- --ignored --nocapture`
#[test]
#[ignore = "prints timings; run in release mode"]
fn latency_of_a_waiting_acquire_before_and_after() {
    for waiters in [100, 800, 1_200, 10_000] {
        let (mut state, holders) = chains(waiters);
        let locks = waiters / CHAIN;
        let by_holder = |n: usize| {
            let holder = holders[n % holders.len()];
            (lock(not_held_by(&holders, locks, holder, n)), holder)
        };
        // A fresh session on an unrelated lock held by one holder.
        let extra = match one(&mut state, 4, session(FOREVER_MS)) {
            Outcome::Session(SessionOutcome::Created { session_id, .. }) => session_id,
            other => panic!("{other:?}"),
        };
        one(&mut state, 4, acquire("unrelated", holders[0], Exclusive));
        let unrelated = |_| ("unrelated".to_owned(), extra);
        let samples = if waiters >= 10_000 { 15 } else { 101 };
        let old_holder = time_acquires(&mut state, samples, true, by_holder);
        let new_holder = time_acquires(&mut state, 1_001, false, by_holder);
        let old_unrelated = time_acquires(&mut state, samples, true, unrelated);
        let new_unrelated = time_acquires(&mut state, 1_001, false, unrelated);
        eprintln!(
            "{waiters:>6} waiters in chains of {CHAIN}: holder joins a chain: old {old_holder:?}, new {new_holder:?}; \
             fresh session on an unrelated lock: old {old_unrelated:?}, new {new_unrelated:?}"
        );
    }
    for waiters in [100, 800, 1_200, 10_000] {
        let (mut state, holder, fresh) = one_queue(waiters);
        let samples = match waiters {
            10_000 => 3,
            1_200 | 800 => 11,
            _ => 101,
        };
        let joins = |_| ("queue".to_owned(), holder);
        let unrelated = |_| ("unrelated".to_owned(), fresh);
        let old_join = time_acquires(&mut state, samples, true, joins);
        let new_join = time_acquires(&mut state, 101, false, joins);
        let old_unrelated = time_acquires(&mut state, samples, true, unrelated);
        let new_unrelated = time_acquires(&mut state, 1_001, false, unrelated);
        eprintln!(
            "{waiters:>6} waiters on one lock: a holder of another lock joins it: old {old_join:?}, \
             new {new_join:?}; fresh session on an unrelated lock: old {old_unrelated:?}, new {new_unrelated:?}"
        );
    }
}

/// `waiters` fresh sessions queued on lock "queue"; returns the state, a session
/// holding lock "other" (so the cycle check cannot be skipped for it) and a fresh
/// session. Lock "unrelated" is held by the holder of "queue".
fn one_queue(waiters: usize) -> (State, SessionId, SessionId) {
    let mut state = State::default();
    let ids = open_sessions(&mut state, 1, waiters + 3, FOREVER_MS);
    let (first, queued) = ids.split_at(3);
    let [owner, holder, fresh] = [first[0], first[1], first[2]];
    run(
        &mut state,
        2,
        vec![
            acquire("queue", owner, Exclusive),
            acquire("unrelated", owner, Exclusive),
            acquire("other", holder, Exclusive),
        ],
    );
    let commands = queued
        .iter()
        .map(|&waiter| acquire("queue", waiter, Exclusive))
        .collect();
    run(&mut state, 3, commands);
    (state, holder, fresh)
}
