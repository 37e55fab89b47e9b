//! Unit tests of deadlock refusal, without Raft: a wait that would close a cycle of
//! two or three sessions is refused naming the cycle, and shared holds take part.

use crate::sm::locks::{LockMode::Exclusive, LockMode::Shared};
use crate::sm::test_support::{acquire_lock, holding, one};
use crate::sm::LockOutcome;
use crate::sm::Outcome;

#[test]
fn a_wait_that_would_close_a_two_session_cycle_is_refused_naming_it() {
    let mut state = holding(2, &[("A", 1, Exclusive), ("B", 2, Exclusive)]);
    assert!(matches!(
        one(&mut state, 2, acquire_lock("B", 1, Exclusive, true)),
        Outcome::Lock(LockOutcome::Queued { .. })
    ));
    assert_eq!(
        one(&mut state, 3, acquire_lock("A", 2, Exclusive, true)),
        Outcome::Lock(LockOutcome::Deadlock {
            cycle: vec![2, 1, 2]
        })
    );
    assert_eq!(
        state.locks["A"].waiters.len(),
        0,
        "the refused request is not queued"
    );
}

#[test]
fn a_three_session_cycle_is_refused() {
    let mut state = holding(
        3,
        &[
            ("A", 1, Exclusive),
            ("B", 2, Exclusive),
            ("C", 3, Exclusive),
        ],
    );
    one(&mut state, 2, acquire_lock("B", 1, Exclusive, true)); // 1 waits for 2
    one(&mut state, 2, acquire_lock("C", 2, Exclusive, true)); // 2 waits for 3
    assert_eq!(
        one(&mut state, 3, acquire_lock("A", 3, Exclusive, true)),
        Outcome::Lock(LockOutcome::Deadlock {
            cycle: vec![3, 1, 2, 3]
        })
    );
}

#[test]
fn shared_holds_take_part_in_cycles() {
    let mut state = holding(2, &[("A", 1, Shared), ("B", 2, Shared)]);
    one(&mut state, 2, acquire_lock("B", 1, Exclusive, true)); // 1 waits for reader 2
    assert!(matches!(
        one(&mut state, 3, acquire_lock("A", 2, Exclusive, true)),
        Outcome::Lock(LockOutcome::Deadlock { .. })
    ));
    // Waiting for a shared lock alongside another reader is no cycle.
    let mut calm = holding(2, &[("A", 1, Shared), ("A", 2, Shared)]);
    assert!(matches!(
        one(&mut calm, 2, acquire_lock("B", 1, Shared, true)),
        Outcome::Lock(LockOutcome::Granted { .. })
    ));
}
