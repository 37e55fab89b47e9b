//! Unit and property tests of locks and guards, without Raft.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::locks::{LockMode, LockMode::Exclusive, LockMode::Shared};
use super::sessions::SessionId;
use super::test_support::{one, run, session, with_sessions_ttl};
use super::*;

/// A state with `n` sessions (ids 1..=n) living 10 s from time 0.
fn with_sessions(n: u64) -> State {
    with_sessions_ttl(n, 10_000)
}

fn acquire(name: &str, session_id: SessionId, mode: LockMode, wait: bool) -> Command {
    Command::LockAcquire {
        name: name.into(),
        session_id,
        mode,
        wait,
        lock_delay_ms: 0,
        previous_token: None,
    }
}

/// An acquire that creates the lock with a lock-delay, or presents a lost token.
fn acquire_delayed(
    name: &str,
    session_id: SessionId,
    lock_delay_ms: u64,
    previous_token: Option<u64>,
) -> Command {
    Command::LockAcquire {
        name: name.into(),
        session_id,
        mode: Exclusive,
        wait: true,
        lock_delay_ms,
        previous_token,
    }
}

fn create_session(state: &mut State, time_ms: u64, ttl_ms: u64) -> SessionId {
    match one(state, time_ms, session(ttl_ms)) {
        Outcome::SessionCreated { session_id, .. } => session_id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn after_a_holders_session_expires_the_lock_is_held_back_for_its_lock_delay() {
    let mut state = with_sessions(1);
    let short = create_session(&mut state, 0, 1_000);
    token(&one(&mut state, 1, acquire_delayed("L", short, 500, None)));
    assert!(matches!(
        one(&mut state, 2, acquire("L", 1, Exclusive, true)),
        Outcome::LockQueued { .. }
    ));
    run(&mut state, 1_000, vec![]); // the holder expires
    assert_eq!(holders(&state, "L"), vec![], "held back, not granted");
    assert_eq!(
        state.next_due_ms(),
        Some(1_500),
        "the delay's end is a deadline"
    );
    run(&mut state, 1_499, vec![]);
    assert_eq!(holders(&state, "L"), vec![]);
    run(&mut state, 1_500, vec![]);
    assert_eq!(
        holders(&state, "L"),
        vec![(1, Exclusive)],
        "granted when the delay ends"
    );
}

#[test]
fn a_clean_release_or_an_explicit_end_has_no_lock_delay() {
    let mut state = with_sessions(3);
    let first = token(&one(&mut state, 1, acquire_delayed("L", 1, 5_000, None)));
    one(&mut state, 2, acquire("L", 2, Exclusive, true));
    one(&mut state, 3, release("L", 1, first));
    assert_eq!(holders(&state, "L"), vec![(2, Exclusive)]);
    one(&mut state, 4, acquire("L", 3, Exclusive, true));
    one(&mut state, 5, Command::SessionEnd { session_id: 2 });
    assert_eq!(holders(&state, "L"), vec![(3, Exclusive)]);
}

#[test]
fn the_expired_holder_presenting_its_token_may_take_the_lock_back_during_the_delay() {
    let mut state = with_sessions(1);
    let short = create_session(&mut state, 0, 1_000);
    let lost = token(&one(
        &mut state,
        1,
        acquire_delayed("L", short, 5_000, None),
    ));
    run(&mut state, 1_000, vec![]);
    assert_eq!(
        one(&mut state, 1_100, acquire("L", 1, Exclusive, false)),
        Outcome::LockHeld
    );
    let back = create_session(&mut state, 1_200, 10_000);
    assert_eq!(
        one(
            &mut state,
            1_300,
            acquire_delayed("L", back, 0, Some(lost + 1))
        ),
        one_queued()
    );
    let regained = one(&mut state, 1_400, acquire_delayed("L", back, 0, Some(lost)));
    assert!(
        matches!(regained, Outcome::LockGranted { .. }),
        "{regained:?}"
    );
}

/// A wrong token does not bypass the delay: the request just queues.
fn one_queued() -> Outcome {
    Outcome::LockQueued { waiter_id: 7 }
}

fn release(name: &str, session_id: SessionId, fencing_token: u64) -> Command {
    Command::LockRelease {
        name: name.into(),
        session_id,
        fencing_token,
    }
}

fn token(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::LockGranted { fencing_token } => *fencing_token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn holders(state: &State, name: &str) -> Vec<(SessionId, LockMode)> {
    state.locks.get(name).map_or(Vec::new(), |lock| {
        lock.holders
            .iter()
            .map(|h| (h.session_id, h.mode))
            .collect()
    })
}

#[test]
fn an_exclusive_grant_returns_a_token_and_others_are_refused_without_waiting() {
    let mut state = with_sessions(2);
    let granted = one(&mut state, 1, acquire("L", 1, Exclusive, false));
    assert_eq!(
        token(&granted),
        3,
        "the token is the granting command's index"
    );
    assert_eq!(
        one(&mut state, 2, acquire("L", 2, Exclusive, false)),
        Outcome::LockHeld
    );
    assert_eq!(
        one(&mut state, 3, acquire("L", 2, Shared, false)),
        Outcome::LockHeld
    );
    assert!(
        state.locks["L"].waiters.is_empty(),
        "a non-waiting request leaves no waiter"
    );
}

#[test]
fn shared_holds_coexist_and_exclude_writers() {
    let mut state = with_sessions(3);
    token(&one(&mut state, 1, acquire("L", 1, Shared, false)));
    token(&one(&mut state, 1, acquire("L", 2, Shared, false)));
    assert_eq!(
        one(&mut state, 1, acquire("L", 3, Exclusive, false)),
        Outcome::LockHeld
    );
    assert_eq!(holders(&state, "L"), vec![(1, Shared), (2, Shared)]);
}

#[test]
fn a_waiting_writer_blocks_later_readers_and_is_granted_first() {
    let mut state = with_sessions(3);
    let reader = token(&one(&mut state, 1, acquire("L", 1, Shared, false)));
    assert!(matches!(
        one(&mut state, 2, acquire("L", 2, Exclusive, true)),
        Outcome::LockQueued { .. }
    ));
    // Writer preference: a new reader queues behind the waiting writer.
    assert!(matches!(
        one(&mut state, 3, acquire("L", 3, Shared, true)),
        Outcome::LockQueued { .. }
    ));
    assert_eq!(
        one(&mut state, 4, release("L", 1, reader)),
        Outcome::LockReleased
    );
    assert_eq!(holders(&state, "L"), vec![(2, Exclusive)]);
    let writer = state.locks["L"].holders[0].fencing_token;
    one(&mut state, 5, release("L", 2, writer));
    assert_eq!(holders(&state, "L"), vec![(3, Shared)]);
}

#[test]
fn consecutive_shared_waiters_are_granted_together() {
    let mut state = with_sessions(4);
    let writer = token(&one(&mut state, 1, acquire("L", 1, Exclusive, false)));
    run(
        &mut state,
        2,
        vec![
            acquire("L", 2, Shared, true),
            acquire("L", 3, Shared, true),
            acquire("L", 4, Exclusive, true),
        ],
    );
    one(&mut state, 3, release("L", 1, writer));
    assert_eq!(holders(&state, "L"), vec![(2, Shared), (3, Shared)]);
    assert_eq!(state.locks["L"].waiters.len(), 1);
}

#[test]
fn tokens_strictly_increase_per_lock_even_within_one_batch() {
    let mut state = with_sessions(2);
    let outcomes = run(
        &mut state,
        1,
        vec![
            acquire("L", 1, Exclusive, false),
            acquire("L", 2, Exclusive, true),
            release("L", 1, 3),
        ],
    );
    assert_eq!(outcomes[0], Outcome::LockGranted { fencing_token: 3 });
    assert_eq!(outcomes[2], Outcome::LockReleased);
    let second = state.locks["L"].holders[0].fencing_token;
    assert!(
        second > 3,
        "the waiter's grant ({second}) must exceed the first token"
    );
}

#[test]
fn release_needs_the_current_token_and_the_holder() {
    let mut state = with_sessions(2);
    let granted = token(&one(&mut state, 1, acquire("L", 1, Exclusive, false)));
    assert_eq!(
        one(&mut state, 2, release("L", 1, granted + 7)),
        Outcome::StaleFencingToken { current: granted }
    );
    assert!(matches!(
        one(&mut state, 3, release("L", 2, granted)),
        Outcome::WrongState { .. }
    ));
    assert_eq!(
        one(&mut state, 4, release("L", 1, granted)),
        Outcome::LockReleased
    );
    assert!(!state.locks.contains_key("L"), "an idle lock is forgotten");
}

#[test]
fn reacquiring_returns_the_current_grant_and_a_retried_wait_resumes_its_waiter() {
    let mut state = with_sessions(2);
    let granted = token(&one(&mut state, 1, acquire("L", 1, Exclusive, false)));
    assert_eq!(
        one(&mut state, 2, acquire("L", 1, Exclusive, true)),
        Outcome::LockGranted {
            fencing_token: granted
        }
    );
    assert!(matches!(
        one(&mut state, 3, acquire("L", 1, Shared, true)),
        Outcome::WrongState { .. }
    ));
    let first = one(&mut state, 4, acquire("L", 2, Exclusive, true));
    let again = one(&mut state, 5, acquire("L", 2, Exclusive, true));
    assert_eq!(first, again, "a retry resumes the same waiter");
    assert_eq!(state.locks["L"].waiters.len(), 1);
}

#[test]
fn a_session_ending_or_expiring_releases_its_holds_and_grants_the_next_waiter() {
    let mut state = with_sessions(3);
    let short = match one(&mut state, 0, session(1_000)) {
        Outcome::SessionCreated { session_id, .. } => session_id,
        other => panic!("{other:?}"),
    };
    token(&one(&mut state, 1, acquire("L", short, Exclusive, false)));
    one(&mut state, 2, acquire("L", 2, Exclusive, true));
    token(&one(&mut state, 3, acquire("M", 1, Exclusive, false)));
    one(&mut state, 4, acquire("M", 3, Exclusive, true));
    // The short session expires at 1_000; session 1 ends explicitly.
    run(
        &mut state,
        1_000,
        vec![Command::SessionEnd { session_id: 1 }],
    );
    assert_eq!(holders(&state, "L"), vec![(2, Exclusive)]);
    assert_eq!(holders(&state, "M"), vec![(3, Exclusive)]);
}

#[test]
fn a_withdrawn_waiter_is_gone_unless_it_was_granted_first() {
    let mut state = with_sessions(3);
    let held = token(&one(&mut state, 1, acquire("L", 1, Exclusive, false)));
    let Outcome::LockQueued { waiter_id } = one(&mut state, 2, acquire("L", 2, Exclusive, true))
    else {
        panic!()
    };
    assert_eq!(
        one(
            &mut state,
            3,
            Command::LockWithdraw {
                name: "L".into(),
                waiter_id
            }
        ),
        Outcome::LockHeld
    );
    assert!(state.locks["L"].waiters.is_empty());
    let Outcome::LockQueued { waiter_id } = one(&mut state, 4, acquire("L", 3, Exclusive, true))
    else {
        panic!()
    };
    one(&mut state, 5, release("L", 1, held));
    let granted = one(
        &mut state,
        6,
        Command::LockWithdraw {
            name: "L".into(),
            waiter_id,
        },
    );
    assert!(
        matches!(granted, Outcome::LockGranted { .. }),
        "the grant won the race: {granted:?}"
    );
    assert_eq!(holders(&state, "L"), vec![(3, Exclusive)]);
}

#[test]
fn a_wait_that_would_close_a_two_session_cycle_is_refused_naming_it() {
    let mut state = with_sessions(2);
    token(&one(&mut state, 1, acquire("A", 1, Exclusive, false)));
    token(&one(&mut state, 1, acquire("B", 2, Exclusive, false)));
    assert!(matches!(
        one(&mut state, 2, acquire("B", 1, Exclusive, true)),
        Outcome::LockQueued { .. }
    ));
    assert_eq!(
        one(&mut state, 3, acquire("A", 2, Exclusive, true)),
        Outcome::Deadlock {
            cycle: vec![2, 1, 2]
        }
    );
    assert_eq!(
        state.locks["A"].waiters.len(),
        0,
        "the refused request is not queued"
    );
}

#[test]
fn a_three_session_cycle_is_refused() {
    let mut state = with_sessions(3);
    for (name, holder) in [("A", 1), ("B", 2), ("C", 3)] {
        token(&one(&mut state, 1, acquire(name, holder, Exclusive, false)));
    }
    one(&mut state, 2, acquire("B", 1, Exclusive, true)); // 1 waits for 2
    one(&mut state, 2, acquire("C", 2, Exclusive, true)); // 2 waits for 3
    assert_eq!(
        one(&mut state, 3, acquire("A", 3, Exclusive, true)),
        Outcome::Deadlock {
            cycle: vec![3, 1, 2, 3]
        }
    );
}

#[test]
fn shared_holds_take_part_in_cycles() {
    let mut state = with_sessions(2);
    token(&one(&mut state, 1, acquire("A", 1, Shared, false)));
    token(&one(&mut state, 1, acquire("B", 2, Shared, false)));
    one(&mut state, 2, acquire("B", 1, Exclusive, true)); // 1 waits for reader 2
    assert!(matches!(
        one(&mut state, 3, acquire("A", 2, Exclusive, true)),
        Outcome::Deadlock { .. }
    ));
    // Waiting for a shared lock alongside another reader is no cycle.
    let mut calm = with_sessions(2);
    token(&one(&mut calm, 1, acquire("A", 1, Shared, false)));
    token(&one(&mut calm, 1, acquire("A", 2, Shared, false)));
    assert!(matches!(
        one(&mut calm, 2, acquire("B", 1, Shared, true)),
        Outcome::LockGranted { .. }
    ));
}

#[test]
fn a_guard_applies_a_command_only_while_its_token_is_current() {
    let mut state = with_sessions(2);
    let first = token(&one(&mut state, 1, acquire("L", 1, Exclusive, false)));
    let guarded = |token: u64, value: &str| Proposal {
        request_id: None,
        guard: Some(Guard {
            kind: GuardKind::Lock,
            name: "L".into(),
            fencing_token: token,
        }),
        command: Command::Kv(crate::sm::kv::KvCommand::Put {
            key: "k".into(),
            value_json: value.into(),
            if_version: None,
            session_id: None,
        }),
    };
    let ok = state.apply_batch(&Batch {
        leader_time_ms: 2,
        proposals: vec![guarded(first, "1")],
    });
    assert!(matches!(ok.results[0].outcome, Outcome::KvWritten { .. }));
    // The holder's session ends; another takes the lock; the old token is now stale.
    run(
        &mut state,
        3,
        vec![
            Command::SessionEnd { session_id: 1 },
            acquire("L", 2, Exclusive, false),
        ],
    );
    let late = state.apply_batch(&Batch {
        leader_time_ms: 4,
        proposals: vec![guarded(first, "late")],
    });
    assert!(matches!(
        late.results[0].outcome,
        Outcome::StaleFencingToken { .. }
    ));
    assert_eq!(
        state.kv["k"].value_json, "1",
        "the stale write changed nothing"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Acquire {
        lock: u8,
        session: u8,
        shared: bool,
        wait: bool,
    },
    Release {
        lock: u8,
        session: u8,
        stale: bool,
    },
    Withdraw {
        lock: u8,
        nth: u8,
    },
    End {
        session: u8,
    },
    Advance {
        ms: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2u8, 1..5u8, any::<bool>(), any::<bool>())
            .prop_map(|(lock, session, shared, wait)| Op::Acquire { lock, session, shared, wait }),
        3 => (0..2u8, 1..5u8, any::<bool>()).prop_map(|(lock, session, stale)| Op::Release { lock, session, stale }),
        1 => (0..2u8, 0..3u8).prop_map(|(lock, nth)| Op::Withdraw { lock, nth }),
        1 => (1..5u8).prop_map(|session| Op::End { session }),
        1 => (0..1500u16).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn command_for(state: &State, op: &Op) -> Option<Command> {
    let name = |lock: &u8| format!("L{lock}");
    Some(match op {
        Op::Acquire {
            lock,
            session,
            shared,
            wait,
        } => acquire(
            &name(lock),
            u64::from(*session),
            if *shared { Shared } else { Exclusive },
            *wait,
        ),
        Op::Release {
            lock,
            session,
            stale,
        } => {
            let current = state
                .locks
                .get(&name(lock))
                .and_then(|l| l.hold_of(u64::from(*session)))
                .map_or(1, |h| h.fencing_token);
            release(
                &name(lock),
                u64::from(*session),
                if *stale {
                    current.saturating_sub(1)
                } else {
                    current
                },
            )
        }
        Op::Withdraw { lock, nth } => {
            let waiter = state
                .locks
                .get(&name(lock))?
                .waiters
                .get(usize::from(*nth))?;
            Command::LockWithdraw {
                name: name(lock),
                waiter_id: waiter.waiter_id,
            }
        }
        Op::End { session } => Command::SessionEnd {
            session_id: u64::from(*session),
        },
        Op::Advance { .. } => return None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random acquire / release / withdraw / session-end / time sequences never
    /// produce two exclusive holders (or a writer beside a reader), tokens of a lock
    /// never decrease, and no waiter is left that could be granted.
    #[test]
    fn locks_never_double_grant_and_tokens_never_decrease(ops in proptest::collection::vec(op(), 1..80)) {
        let mut state = State::default();
        run(&mut state, 0, (0..4).map(|_| session(2_000)).collect());
        let mut time = 0u64;
        let mut last_tokens: BTreeMap<String, u64> = BTreeMap::new();
        // Every token ever granted belongs to exactly one (lock, session) grant.
        let mut owners: BTreeMap<u64, (String, SessionId)> = BTreeMap::new();
        for op in &ops {
            if let Op::Advance { ms } = op {
                time += u64::from(*ms);
            }
            let commands: Vec<Command> = command_for(&state, op).into_iter().collect();
            run(&mut state, time, commands);
            for (name, lock) in &state.locks {
                let exclusive = lock.holders.iter().filter(|h| h.mode == Exclusive).count();
                prop_assert!(exclusive <= 1, "{name}: two exclusive holders {:?}", lock.holders);
                prop_assert!(exclusive == 0 || lock.holders.len() == 1, "{name}: writer beside readers {:?}", lock.holders);
                let max = lock.holders.iter().map(|h| h.fencing_token).max().unwrap_or(0);
                let last = last_tokens.entry(name.clone()).or_default();
                prop_assert!(lock.last_token >= *last, "{name}: tokens went back");
                prop_assert!(max <= lock.last_token);
                *last = lock.last_token;
                if let Some(head) = lock.waiters.front() {
                    let blocked = match head.mode {
                        Exclusive => !lock.holders.is_empty(),
                        Shared => lock.holders.iter().any(|h| h.mode == Exclusive),
                    };
                    prop_assert!(blocked, "{name}: head waiter {head:?} could be granted");
                }
                for hold in &lock.holders {
                    prop_assert!(state.sessions.get(hold.session_id).is_some(), "a dead session holds {name}");
                    let owner = owners.entry(hold.fencing_token).or_insert((name.clone(), hold.session_id));
                    prop_assert_eq!(owner, &(name.clone(), hold.session_id), "token {} granted twice", hold.fencing_token);
                }
            }
        }
    }
}

// ----- regressions ------------------------------------------------------------------

/// Regression: several grants in one command took tokens index, index+1, …; when the
/// lock was then forgotten as idle, a later grant reused one of those tokens, and an
/// expired holder's guarded write was accepted.
#[test]
fn fencing_tokens_are_never_reused_after_a_lock_is_forgotten() {
    let mut state = State::default();
    let writer = create_session(&mut state, 0, 60_000);
    let readers: Vec<SessionId> = (0..4)
        .map(|_| create_session(&mut state, 0, 1_000))
        .collect();
    let held = token(&one(&mut state, 1, acquire("L", writer, Exclusive, false)));
    for reader in &readers {
        one(&mut state, 2, acquire("L", *reader, Shared, true));
    }
    one(&mut state, 3, release("L", writer, held));
    let granted: Vec<u64> = state.locks["L"]
        .holders
        .iter()
        .map(|h| h.fencing_token)
        .collect();
    assert_eq!(granted.len(), 4);
    run(&mut state, 1_000, vec![]); // every reader expires; the lock is forgotten
    assert!(!state.locks.contains_key("L"));
    let next = token(&one(
        &mut state,
        1_001,
        acquire("L", writer, Exclusive, false),
    ));
    assert!(
        next > *granted.iter().max().unwrap(),
        "token {next} reused one of {granted:?}"
    );
    let late = Proposal {
        request_id: None,
        guard: Some(Guard {
            kind: GuardKind::Lock,
            name: "L".into(),
            fencing_token: *granted.last().unwrap(),
        }),
        command: Command::Kv(crate::sm::kv::KvCommand::Put {
            key: "k".into(),
            value_json: "1".into(),
            if_version: None,
            session_id: None,
        }),
    };
    let refused = state.apply_batch(&Batch {
        leader_time_ms: 1_002,
        proposals: vec![late],
    });
    assert!(matches!(
        refused.results[0].outcome,
        Outcome::StaleFencingToken { .. }
    ));
}

#[test]
fn tokens_are_unique_across_locks() {
    let mut state = with_sessions(3);
    let held = token(&one(&mut state, 1, acquire("S", 1, Exclusive, false)));
    one(&mut state, 2, acquire("S", 2, Shared, true));
    one(&mut state, 2, acquire("S", 3, Shared, true));
    let outcomes = run(
        &mut state,
        3,
        vec![release("S", 1, held), acquire("other", 1, Exclusive, false)],
    );
    let shared: Vec<u64> = state.locks["S"]
        .holders
        .iter()
        .map(|h| h.fencing_token)
        .collect();
    let other = token(&outcomes[1]);
    assert!(shared.iter().all(|t| *t < other), "{shared:?} vs {other}");
}

/// Regression: `previous_token` took a lock back during its lock-delay even when a
/// shared holder made an exclusive hold impossible.
#[test]
fn previous_token_does_not_bypass_mode_compatibility() {
    let mut state = with_sessions(1);
    let short = create_session(&mut state, 0, 1_000);
    let lost = token(&one(
        &mut state,
        1,
        Command::LockAcquire {
            name: "L".into(),
            session_id: short,
            mode: Shared,
            wait: false,
            lock_delay_ms: 5_000,
            previous_token: None,
        },
    ));
    token(&one(&mut state, 2, acquire("L", 1, Shared, false)));
    run(&mut state, 1_000, vec![]);
    let back = create_session(&mut state, 1_100, 10_000);
    let attempt = one(&mut state, 1_200, acquire_delayed("L", back, 0, Some(lost)));
    assert!(
        !matches!(attempt, Outcome::LockGranted { .. }),
        "exclusive beside a reader: {attempt:?}"
    );
    assert_eq!(holders(&state, "L"), vec![(1, Shared)]);
}

#[test]
fn a_request_id_reused_with_a_different_guard_is_a_conflict() {
    let mut state = with_sessions(1);
    let held = token(&one(&mut state, 1, acquire("L", 1, Exclusive, false)));
    let put = |guard: Option<Guard>| Proposal {
        request_id: Some("r".into()),
        guard,
        command: Command::Kv(crate::sm::kv::KvCommand::Put {
            key: "k".into(),
            value_json: "1".into(),
            if_version: None,
            session_id: None,
        }),
    };
    state.apply_batch(&Batch {
        leader_time_ms: 2,
        proposals: vec![put(None)],
    });
    let guarded = Some(Guard {
        kind: GuardKind::Lock,
        name: "L".into(),
        fencing_token: held,
    });
    let again = state.apply_batch(&Batch {
        leader_time_ms: 3,
        proposals: vec![put(guarded)],
    });
    assert_eq!(again.results[0].outcome, Outcome::RequestIdConflict);
}
