//! Unit tests of the retention of idle barriers and of the upgrade that turns it
//! on (`sm::retention`, `sm::format`).

use crate::limits::Replicated;
use crate::sm::barriers::BarrierCommand;
use crate::sm::test_support::{acquire_permits, arrive, end_session, one, run, with_sessions_ttl};
use crate::sm::*;

const HOUR: u64 = Replicated::IDLE_RECORD_RETENTION_MS;

fn upgraded(sessions: u64) -> State {
    let mut state = with_sessions_ttl(sessions, 10 * HOUR);
    one(&mut state, 1, Command::Upgrade { format: 8 });
    state
}

fn leave(session_id: u64, generation: u64) -> Command {
    Command::Barrier(BarrierCommand::Leave {
        name: "B".into(),
        session_id,
        generation,
    })
}

#[test]
fn an_upgrade_takes_no_command_index_and_answers_the_format() {
    let mut state = with_sessions_ttl(1, HOUR);
    state.take_events();
    let before = state.last_command_index;
    let outcome = one(&mut state, 1, Command::Upgrade { format: 8 });
    assert_eq!(outcome, Outcome::Upgraded { format: 8 });
    assert_eq!(state.last_command_index, before);
    assert_eq!(state.active_format(), 8);
    assert!(state.take_events().is_empty(), "no event for an upgrade");
}

#[test]
fn a_released_barrier_is_kept_for_the_retention_then_removed() {
    let mut state = upgraded(2);
    one(&mut state, 10, arrive(1, 2));
    assert!(state.idle.is_empty(), "gathering: in use");
    one(&mut state, 20, arrive(2, 2));
    assert_eq!(state.idle.len(), 1, "released: idle");
    assert_eq!(state.next_due_ms(), Some(20 + HOUR));
    run(&mut state, 20 + HOUR - 1, vec![]);
    // A waiter whose wait timed out can still learn how its generation ended.
    assert_eq!(
        one(&mut state, 20 + HOUR - 1, leave(1, 0)),
        Outcome::Barrier(BarrierOutcome::Released { generation: 0 })
    );
    run(&mut state, 20 + HOUR, vec![]);
    assert!(
        state.barriers.is_empty(),
        "removed an hour after it emptied"
    );
    assert!(state.idle.is_empty());
}

#[test]
fn a_barrier_used_again_restarts_its_idle_clock() {
    let mut state = upgraded(2);
    one(&mut state, 10, arrive(1, 1));
    one(&mut state, 10 + HOUR / 2, arrive(2, 2));
    assert!(state.idle.is_empty(), "gathering again");
    run(&mut state, 10 + HOUR, vec![]);
    assert!(state.barriers.contains_key("B"));
    one(&mut state, 20 + HOUR, leave(2, 1));
    assert_eq!(state.next_due_ms(), Some(20 + 2 * HOUR));
}

#[test]
fn a_barrier_broken_by_a_session_end_goes_idle() {
    let mut state = upgraded(2);
    one(&mut state, 10, arrive(1, 2));
    one(&mut state, 20, end_session(1));
    assert_eq!(state.idle.len(), 1);
    run(&mut state, 20 + HOUR, vec![]);
    assert!(state.barriers.is_empty());
}

#[test]
fn before_the_upgrade_nothing_is_tracked_and_the_upgrade_marks_what_is_idle_then() {
    let mut state = with_sessions_ttl(3, 10 * HOUR);
    one(&mut state, 10, arrive(1, 1));
    one(&mut state, 20, arrive(2, 2));
    assert!(
        state.idle.is_empty(),
        "the previous format keeps every record"
    );
    run(&mut state, 20 + 2 * HOUR, vec![]);
    assert_eq!(state.barriers.len(), 1);
    let at = 30 + 2 * HOUR;
    one(&mut state, at, Command::Upgrade { format: 8 });
    assert!(state.idle.is_empty(), "a gathering barrier is not idle");
    one(&mut state, at, leave(2, 1));
    assert_eq!(
        state.next_due_ms(),
        Some(at + HOUR),
        "idle from the upgrade on"
    );
}

#[test]
fn two_replicas_applying_the_same_entries_hold_the_same_bytes() {
    let entries: Vec<(u64, Vec<Command>)> = vec![
        (1, vec![Command::Upgrade { format: 8 }]),
        (10, vec![acquire_permits(1, 1, 2, false), arrive(2, 3)]),
        (20, vec![end_session(1), end_session(2)]),
        (20 + HOUR / 2, vec![arrive(3, 2)]),
        (20 + HOUR, vec![]),
    ];
    let replay = || {
        let mut state = with_sessions_ttl(3, 10 * HOUR);
        for (at, commands) in &entries {
            run(&mut state, *at, commands.clone());
        }
        state
    };
    let (a, b) = (replay(), replay());
    assert_eq!(a.barriers.len(), 1, "the one gathering again is kept");
    assert_eq!(
        crate::codec::encode(&a).unwrap(),
        crate::codec::encode(&b).unwrap()
    );
}
