//! Unit tests of lock grants, without Raft: modes and writer preference, fencing
//! tokens (per lock, within a batch, across locks, never reused), release, a retry
//! resuming its waiter, withdrawal racing a grant, and release on session end.

use crate::sm::locks::{LockMode::Exclusive, LockMode::Shared};
use crate::sm::sessions::SessionId;
use crate::sm::test_support::{
    acquire_lock, end_session, grant_each, granted_token, guarded_put, holding, lock_holders, one,
    open_session, release_lock, run, run_submissions, with_sessions_and_a_short_one,
    with_sessions_ttl, withdraw_lock,
};
use crate::sm::{GuardKind, Outcome, State};
use crate::sm::{LockOutcome, Refusal};

#[test]
fn an_exclusive_grant_returns_a_token_and_others_are_refused_without_waiting() {
    let mut state = with_sessions_ttl(2, 10_000);
    let granted = one(&mut state, 1, acquire_lock("L", 1, Exclusive, false));
    assert_eq!(
        granted_token(&granted),
        3,
        "the token is the granting command's index"
    );
    assert_eq!(
        one(&mut state, 2, acquire_lock("L", 2, Exclusive, false)),
        Outcome::Lock(LockOutcome::Held)
    );
    assert_eq!(
        one(&mut state, 3, acquire_lock("L", 2, Shared, false)),
        Outcome::Lock(LockOutcome::Held)
    );
    assert!(
        state.locks["L"].waiters.is_empty(),
        "a non-waiting request leaves no waiter"
    );
}

#[test]
fn shared_holds_coexist_and_exclude_writers() {
    let mut state = holding(3, &[("L", 1, Shared), ("L", 2, Shared)]);
    assert_eq!(
        one(&mut state, 1, acquire_lock("L", 3, Exclusive, false)),
        Outcome::Lock(LockOutcome::Held)
    );
    assert_eq!(lock_holders(&state, "L"), vec![(1, Shared), (2, Shared)]);
}

#[test]
fn a_waiting_writer_blocks_later_readers_and_is_granted_first() {
    let mut state = with_sessions_ttl(3, 10_000);
    let reader = granted_token(&one(&mut state, 1, acquire_lock("L", 1, Shared, false)));
    assert!(matches!(
        one(&mut state, 2, acquire_lock("L", 2, Exclusive, true)),
        Outcome::Lock(LockOutcome::Queued { .. })
    ));
    // Writer preference: a new reader queues behind the waiting writer.
    assert!(matches!(
        one(&mut state, 3, acquire_lock("L", 3, Shared, true)),
        Outcome::Lock(LockOutcome::Queued { .. })
    ));
    assert_eq!(
        one(&mut state, 4, release_lock("L", 1, reader)),
        Outcome::Lock(LockOutcome::Released)
    );
    assert_eq!(lock_holders(&state, "L"), vec![(2, Exclusive)]);
    let writer = state.locks["L"].holders[0].fencing_token;
    one(&mut state, 5, release_lock("L", 2, writer));
    assert_eq!(lock_holders(&state, "L"), vec![(3, Shared)]);
}

#[test]
fn consecutive_shared_waiters_are_granted_together() {
    let mut state = with_sessions_ttl(4, 10_000);
    let writer = granted_token(&one(&mut state, 1, acquire_lock("L", 1, Exclusive, false)));
    run(
        &mut state,
        2,
        vec![
            acquire_lock("L", 2, Shared, true),
            acquire_lock("L", 3, Shared, true),
            acquire_lock("L", 4, Exclusive, true),
        ],
    );
    one(&mut state, 3, release_lock("L", 1, writer));
    assert_eq!(lock_holders(&state, "L"), vec![(2, Shared), (3, Shared)]);
    assert_eq!(state.locks["L"].waiters.len(), 1);
}

#[test]
fn tokens_strictly_increase_per_lock_even_within_one_batch() {
    let mut state = with_sessions_ttl(2, 10_000);
    let outcomes = run(
        &mut state,
        1,
        vec![
            acquire_lock("L", 1, Exclusive, false),
            acquire_lock("L", 2, Exclusive, true),
            release_lock("L", 1, 3),
        ],
    );
    assert_eq!(
        outcomes[0],
        Outcome::Lock(LockOutcome::Granted { fencing_token: 3 })
    );
    assert_eq!(outcomes[2], Outcome::Lock(LockOutcome::Released));
    let second = state.locks["L"].holders[0].fencing_token;
    assert!(
        second > 3,
        "the waiter's grant ({second}) must exceed the first token"
    );
}

#[test]
fn release_needs_the_current_token_and_the_holder() {
    let mut state = with_sessions_ttl(2, 10_000);
    let granted = granted_token(&one(&mut state, 1, acquire_lock("L", 1, Exclusive, false)));
    assert_eq!(
        one(&mut state, 2, release_lock("L", 1, granted + 7)),
        Outcome::Refused(Refusal::StaleFencingToken { current: granted })
    );
    assert!(matches!(
        one(&mut state, 3, release_lock("L", 2, granted)),
        Outcome::Refused(Refusal::WrongState { .. })
    ));
    assert_eq!(
        one(&mut state, 4, release_lock("L", 1, granted)),
        Outcome::Lock(LockOutcome::Released)
    );
    assert!(!state.locks.contains_key("L"), "an idle lock is forgotten");
}

#[test]
fn reacquiring_returns_the_current_grant_and_a_retried_wait_resumes_its_waiter() {
    let mut state = with_sessions_ttl(2, 10_000);
    let granted = granted_token(&one(&mut state, 1, acquire_lock("L", 1, Exclusive, false)));
    assert_eq!(
        one(&mut state, 2, acquire_lock("L", 1, Exclusive, true)),
        Outcome::Lock(LockOutcome::Granted {
            fencing_token: granted
        })
    );
    assert!(matches!(
        one(&mut state, 3, acquire_lock("L", 1, Shared, true)),
        Outcome::Refused(Refusal::WrongState { .. })
    ));
    let first = one(&mut state, 4, acquire_lock("L", 2, Exclusive, true));
    let again = one(&mut state, 5, acquire_lock("L", 2, Exclusive, true));
    assert_eq!(first, again, "a retry resumes the same waiter");
    assert_eq!(state.locks["L"].waiters.len(), 1);
}

#[test]
fn a_session_ending_or_expiring_releases_its_holds_and_grants_the_next_waiter() {
    let (mut state, short) = with_sessions_and_a_short_one(3);
    grant_each(&mut state, 1, &[("L", short, Exclusive)]);
    one(&mut state, 2, acquire_lock("L", 2, Exclusive, true));
    grant_each(&mut state, 3, &[("M", 1, Exclusive)]);
    one(&mut state, 4, acquire_lock("M", 3, Exclusive, true));
    // The short session expires at 1_000; session 1 ends explicitly.
    run(&mut state, 1_000, vec![end_session(1)]);
    assert_eq!(lock_holders(&state, "L"), vec![(2, Exclusive)]);
    assert_eq!(lock_holders(&state, "M"), vec![(3, Exclusive)]);
}

#[test]
fn a_withdrawn_waiter_is_gone_unless_it_was_granted_first() {
    let mut state = with_sessions_ttl(3, 10_000);
    let held = granted_token(&one(&mut state, 1, acquire_lock("L", 1, Exclusive, false)));
    let Outcome::Lock(LockOutcome::Queued { waiter_id }) =
        one(&mut state, 2, acquire_lock("L", 2, Exclusive, true))
    else {
        panic!()
    };
    assert_eq!(
        one(&mut state, 3, withdraw_lock("L", waiter_id)),
        Outcome::Lock(LockOutcome::Held)
    );
    assert!(state.locks["L"].waiters.is_empty());
    let Outcome::Lock(LockOutcome::Queued { waiter_id }) =
        one(&mut state, 4, acquire_lock("L", 3, Exclusive, true))
    else {
        panic!()
    };
    one(&mut state, 5, release_lock("L", 1, held));
    let granted = one(&mut state, 6, withdraw_lock("L", waiter_id));
    assert!(
        matches!(granted, Outcome::Lock(LockOutcome::Granted { .. })),
        "the grant won the race: {granted:?}"
    );
    assert_eq!(lock_holders(&state, "L"), vec![(3, Exclusive)]);
}

// ----- regressions ------------------------------------------------------------------

/// Regression: several grants in one command took tokens index, index+1, …; when the
/// lock was then forgotten as idle, a later grant reused one of those tokens, and an
/// expired holder's guarded write was accepted.
#[test]
fn fencing_tokens_are_never_reused_after_a_lock_is_forgotten() {
    let mut state = State::default();
    let writer = open_session(&mut state, 0, &[], 0, 60_000);
    let readers: Vec<SessionId> = (0..4)
        .map(|_| open_session(&mut state, 0, &[], 0, 1_000))
        .collect();
    let held = granted_token(&one(
        &mut state,
        1,
        acquire_lock("L", writer, Exclusive, false),
    ));
    for reader in &readers {
        one(&mut state, 2, acquire_lock("L", *reader, Shared, true));
    }
    one(&mut state, 3, release_lock("L", writer, held));
    let granted: Vec<u64> = state.locks["L"]
        .holders
        .iter()
        .map(|h| h.fencing_token)
        .collect();
    assert_eq!(granted.len(), 4);
    run(&mut state, 1_000, vec![]); // every reader expires; the lock is forgotten
    assert!(!state.locks.contains_key("L"));
    let next = granted_token(&one(
        &mut state,
        1_001,
        acquire_lock("L", writer, Exclusive, false),
    ));
    assert!(
        next > *granted.iter().max().unwrap(),
        "token {next} reused one of {granted:?}"
    );
    let late = guarded_put(GuardKind::Lock, "L", *granted.last().unwrap());
    let refused = run_submissions(&mut state, 1_002, vec![late]);
    assert!(matches!(
        refused[0],
        Outcome::Refused(Refusal::StaleFencingToken { .. })
    ));
}

#[test]
fn tokens_are_unique_across_locks() {
    let mut state = with_sessions_ttl(3, 10_000);
    let held = granted_token(&one(&mut state, 1, acquire_lock("S", 1, Exclusive, false)));
    one(&mut state, 2, acquire_lock("S", 2, Shared, true));
    one(&mut state, 2, acquire_lock("S", 3, Shared, true));
    let outcomes = run(
        &mut state,
        3,
        vec![
            release_lock("S", 1, held),
            acquire_lock("other", 1, Exclusive, false),
        ],
    );
    let shared: Vec<u64> = state.locks["S"]
        .holders
        .iter()
        .map(|h| h.fencing_token)
        .collect();
    let other = granted_token(&outcomes[1]);
    assert!(shared.iter().all(|t| *t < other), "{shared:?} vs {other}");
}
