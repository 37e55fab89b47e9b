//! Unit tests of semaphores: weighted FIFO grants, the limit, session end and
//! permit guards.

use super::SemaphoreCommand;
use crate::sm::sessions::SessionId;
use crate::sm::test_support::{acquire_permits, end_session, guarded_put, run_submissions};
use crate::sm::test_support::{one, with_sessions_ttl as with_sessions};
use crate::sm::*;
use crate::sm::{KvOutcome, Refusal, SemaphoreOutcome};

#[test]
fn weighted_permits_are_granted_within_the_limit_and_fifo() {
    let mut state = with_sessions(3, 60_000);
    let first = one(&mut state, 1, acquire_permits(1, 2, 3, false));
    assert!(matches!(
        first,
        Outcome::Semaphore(SemaphoreOutcome::Granted { .. })
    ));
    assert_eq!(
        one(&mut state, 2, acquire_permits(2, 2, 3, false)),
        Outcome::Semaphore(SemaphoreOutcome::Unavailable)
    );
    assert!(matches!(
        one(&mut state, 3, acquire_permits(2, 2, 3, true)),
        Outcome::Semaphore(SemaphoreOutcome::Queued { .. })
    ));
    // FIFO: a 1-permit request that would fit waits behind the queued 2-permit one.
    assert!(matches!(
        one(&mut state, 4, acquire_permits(3, 1, 3, true)),
        Outcome::Semaphore(SemaphoreOutcome::Queued { .. })
    ));
    let Outcome::Semaphore(SemaphoreOutcome::Granted { fencing_token }) = first else {
        unreachable!()
    };
    let released = one(
        &mut state,
        5,
        Command::Semaphore(SemaphoreCommand::Release {
            name: "S".into(),
            session_id: 1,
            fencing_token,
        }),
    );
    assert_eq!(released, Outcome::Semaphore(SemaphoreOutcome::Released));
    let holders: Vec<(SessionId, u32)> = state.semaphores["S"]
        .holders
        .iter()
        .map(|p| (p.session_id, p.permits))
        .collect();
    assert_eq!(holders, vec![(2, 2), (3, 1)]);
}

#[test]
fn the_first_acquirer_fixes_the_limit_and_a_different_one_is_refused() {
    let mut state = with_sessions(2, 60_000);
    one(&mut state, 1, acquire_permits(1, 1, 3, false));
    assert_eq!(
        one(&mut state, 2, acquire_permits(2, 1, 4, false)),
        Outcome::Semaphore(SemaphoreOutcome::LimitMismatch { limit: 3 })
    );
    assert!(matches!(
        one(&mut state, 3, acquire_permits(2, 4, 3, false)),
        Outcome::Refused(Refusal::InvalidCommand { .. })
    ));
}

#[test]
fn a_session_end_returns_its_permits_and_a_permit_guard_goes_stale() {
    let mut state = with_sessions(2, 60_000);
    let Outcome::Semaphore(SemaphoreOutcome::Granted { fencing_token }) =
        one(&mut state, 1, acquire_permits(1, 3, 3, false))
    else {
        panic!()
    };
    one(&mut state, 2, acquire_permits(2, 1, 3, true));
    let guarded = guarded_put(GuardKind::Semaphore, "S", fencing_token);
    let ok = run_submissions(&mut state, 3, vec![guarded.clone()]);
    assert!(matches!(ok[0], Outcome::Kv(KvOutcome::Written { .. })));
    one(&mut state, 4, end_session(1));
    assert_eq!(
        state.semaphores["S"].holders[0].session_id, 2,
        "the waiter got the freed permits"
    );
    let late = run_submissions(&mut state, 5, vec![guarded]);
    assert!(matches!(
        late[0],
        Outcome::Refused(Refusal::StaleFencingToken { .. })
    ));
}
