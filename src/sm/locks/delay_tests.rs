//! Unit tests of lock-delay, without Raft: after a holder's session expires its
//! lock is held back for the lock's delay, a clean release or an explicit end is
//! not, and the expired holder presenting its token may take the lock back.

use crate::sm::locks::{LockCommand, LockMode::Exclusive, LockMode::Shared};
use crate::sm::sessions::SessionId;
use crate::sm::test_support::{
    acquire_lock, acquire_lock_delayed, end_session, grant_each, granted_token, lock_holders, one,
    open_session, release_lock, run, with_sessions_and_a_short_one, with_sessions_ttl,
};
use crate::sm::LockOutcome;
use crate::sm::{Command, Outcome};

#[test]
fn after_a_holders_session_expires_the_lock_is_held_back_for_its_lock_delay() {
    let (mut state, short) = with_sessions_and_a_short_one(1);
    granted_token(&one(
        &mut state,
        1,
        acquire_lock_delayed("L", short, 500, None),
    ));
    assert!(matches!(
        one(&mut state, 2, acquire_lock("L", 1, Exclusive, true)),
        Outcome::Lock(LockOutcome::Queued { .. })
    ));
    run(&mut state, 1_000, vec![]); // the holder expires
    assert_eq!(lock_holders(&state, "L"), vec![], "held back, not granted");
    assert_eq!(
        state.next_due_ms(),
        Some(1_500),
        "the delay's end is a deadline"
    );
    run(&mut state, 1_499, vec![]);
    assert_eq!(lock_holders(&state, "L"), vec![]);
    run(&mut state, 1_500, vec![]);
    assert_eq!(
        lock_holders(&state, "L"),
        vec![(1, Exclusive)],
        "granted when the delay ends"
    );
}

#[test]
fn a_clean_release_or_an_explicit_end_has_no_lock_delay() {
    let mut state = with_sessions_ttl(3, 10_000);
    let first = granted_token(&one(
        &mut state,
        1,
        acquire_lock_delayed("L", 1, 5_000, None),
    ));
    one(&mut state, 2, acquire_lock("L", 2, Exclusive, true));
    one(&mut state, 3, release_lock("L", 1, first));
    assert_eq!(lock_holders(&state, "L"), vec![(2, Exclusive)]);
    one(&mut state, 4, acquire_lock("L", 3, Exclusive, true));
    one(&mut state, 5, end_session(2));
    assert_eq!(lock_holders(&state, "L"), vec![(3, Exclusive)]);
}

#[test]
fn the_expired_holder_presenting_its_token_may_take_the_lock_back_during_the_delay() {
    let (mut state, short) = with_sessions_and_a_short_one(1);
    let lost = granted_token(&one(
        &mut state,
        1,
        acquire_lock_delayed("L", short, 5_000, None),
    ));
    run(&mut state, 1_000, vec![]);
    assert_eq!(
        one(&mut state, 1_100, acquire_lock("L", 1, Exclusive, false)),
        Outcome::Lock(LockOutcome::Held)
    );
    let back = open_session(&mut state, 1_200, &[], 0, 10_000);
    assert_eq!(
        one(
            &mut state,
            1_300,
            acquire_lock_delayed("L", back, 0, Some(lost + 1))
        ),
        one_queued()
    );
    let regained = one(
        &mut state,
        1_400,
        acquire_lock_delayed("L", back, 0, Some(lost)),
    );
    assert!(
        matches!(regained, Outcome::Lock(LockOutcome::Granted { .. })),
        "{regained:?}"
    );
}

/// A non-waiting shared acquire that creates the lock with a lock-delay.
fn acquire_shared_delayed(name: &str, session_id: SessionId, lock_delay_ms: u64) -> Command {
    Command::Lock(LockCommand::Acquire {
        name: name.into(),
        session_id,
        mode: Shared,
        wait: false,
        lock_delay_ms,
        previous_token: None,
    })
}

/// A wrong token does not bypass the delay: the request just queues.
fn one_queued() -> Outcome {
    Outcome::Lock(LockOutcome::Queued { waiter_id: 7 })
}

/// Regression: `previous_token` took a lock back during its lock-delay even when a
/// shared holder made an exclusive hold impossible.
#[test]
fn previous_token_does_not_bypass_mode_compatibility() {
    let (mut state, short) = with_sessions_and_a_short_one(1);
    let lost = granted_token(&one(
        &mut state,
        1,
        acquire_shared_delayed("L", short, 5_000),
    ));
    grant_each(&mut state, 2, &[("L", 1, Shared)]);
    run(&mut state, 1_000, vec![]);
    let back = open_session(&mut state, 1_100, &[], 0, 10_000);
    let attempt = one(
        &mut state,
        1_200,
        acquire_lock_delayed("L", back, 0, Some(lost)),
    );
    assert!(
        !matches!(attempt, Outcome::Lock(LockOutcome::Granted { .. })),
        "exclusive beside a reader: {attempt:?}"
    );
    assert_eq!(lock_holders(&state, "L"), vec![(1, Shared)]);
}
