//! Unit tests of barriers: release, breaking on session end, leaving.

use super::BarrierCommand;
use crate::sm::test_support::arrive;
use crate::sm::test_support::{one, run, with_sessions_ttl as with_sessions};
use crate::sm::*;
use crate::sm::{BarrierOutcome, Refusal};

#[test]
fn a_barrier_releases_its_generation_when_all_parties_arrive() {
    let mut state = with_sessions(3, 60_000);
    assert_eq!(
        one(&mut state, 1, arrive(1, 3)),
        Outcome::Barrier(BarrierOutcome::Waiting { generation: 0 })
    );
    assert_eq!(
        one(&mut state, 1, arrive(1, 3)),
        Outcome::Barrier(BarrierOutcome::Waiting { generation: 0 }),
        "arriving twice counts once"
    );
    assert_eq!(
        one(&mut state, 2, arrive(2, 3)),
        Outcome::Barrier(BarrierOutcome::Waiting { generation: 0 })
    );
    assert_eq!(
        one(&mut state, 3, arrive(3, 3)),
        Outcome::Barrier(BarrierOutcome::Released { generation: 0 })
    );
    let barrier = &state.barriers["B"];
    assert_eq!(
        (
            barrier.generation,
            barrier.arrived.len(),
            barrier.ended.get(&0)
        ),
        (1, 0, Some(&false))
    );
    assert!(matches!(
        one(&mut state, 4, arrive(1, 4)),
        Outcome::Barrier(BarrierOutcome::Waiting { generation: 1 })
    ));
    assert!(
        matches!(
            one(&mut state, 5, arrive(2, 3)),
            Outcome::Refused(Refusal::WrongState { .. })
        ),
        "parties are fixed per generation"
    );
}

#[test]
fn a_participants_session_ending_breaks_the_generation() {
    let mut state = with_sessions(3, 1_000);
    one(&mut state, 1, arrive(1, 3));
    one(&mut state, 1, arrive(2, 3));
    // Sessions expire at 1_000.
    run(&mut state, 1_000, vec![]);
    let barrier = &state.barriers["B"];
    assert_eq!(barrier.ended.get(&0), Some(&true), "generation 0 broken");
    assert_eq!(barrier.generation, 1);
}

#[test]
fn leaving_an_unreleased_generation_withdraws_and_a_released_one_reports_it() {
    let mut state = with_sessions(2, 60_000);
    one(&mut state, 1, arrive(1, 2));
    assert_eq!(
        one(
            &mut state,
            2,
            Command::Barrier(BarrierCommand::Leave {
                name: "B".into(),
                session_id: 1,
                generation: 0
            })
        ),
        Outcome::Barrier(BarrierOutcome::Left)
    );
    assert!(state.barriers["B"].arrived.is_empty());
    one(&mut state, 3, arrive(1, 2));
    one(&mut state, 4, arrive(2, 2));
    let late = one(
        &mut state,
        5,
        Command::Barrier(BarrierCommand::Leave {
            name: "B".into(),
            session_id: 1,
            generation: 0,
        }),
    );
    assert_eq!(
        late,
        Outcome::Barrier(BarrierOutcome::Released { generation: 0 })
    );
}
