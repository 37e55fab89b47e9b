//! Regression tests of sessions and tasks, each named after the bug it pins.

use crate::sm::sessions::SessionCommand;
use crate::sm::tasks::NewTask;
use crate::sm::test_support::{batch, claim, create_session, submit, task_spec, Machine};
use crate::sm::{Batch, Command, Outcome, State, Submission};
use crate::sm::{Refusal, SessionOutcome, TaskOutcome};

// ----- regressions ------------------------------------------------------------------

#[test]
fn claim_takes_the_sessions_highest_priority_task_first() {
    let mut m = Machine::default();
    m.apply_one(0, create_session(&[], 2, 60_000));
    let low = match m.apply_one(1, submit(task_spec(&[]))) {
        Outcome::Task(TaskOutcome::Submitted { task_id, .. }) => task_id,
        other => panic!("{other:?}"),
    };
    let urgent = match m.apply_one(
        2,
        submit(NewTask {
            priority: 5,
            ..task_spec(&[])
        }),
    ) {
        Outcome::Task(TaskOutcome::Submitted { task_id, .. }) => task_id,
        other => panic!("{other:?}"),
    };
    assert!(
        matches!(m.apply_one(3, claim(1)), Outcome::Task(TaskOutcome::Claimed { task_id, .. }) if task_id == urgent)
    );
    assert!(
        matches!(m.apply_one(4, claim(1)), Outcome::Task(TaskOutcome::Claimed { task_id, .. }) if task_id == low)
    );
}

#[test]
fn a_capacity_refusal_is_not_remembered_under_its_request_id() {
    let mut state = State::default();
    let create = || create_session(&[], 0, 60_000);
    let fill: Vec<Submission> = (0..crate::limits::Replicated::MAX_SESSIONS)
        .map(|_| Submission {
            request_id: None,
            guard: None,
            acting_as: None,
            command: create(),
        })
        .collect();
    state.apply_batch(&Batch {
        leader_time_ms: 0,
        submissions: fill,
    });
    let with_id = || Submission {
        request_id: Some("r".into()),
        guard: None,
        acting_as: None,
        command: create(),
    };
    let refused = state.apply_batch(&Batch {
        leader_time_ms: 1,
        submissions: vec![with_id()],
    });
    assert!(matches!(
        refused.results[0].outcome,
        Outcome::Refused(Refusal::LimitReached { .. })
    ));
    state.apply_batch(&batch(
        2,
        vec![Command::Session(SessionCommand::End { session_id: 1 })],
    ));
    let retried = state.apply_batch(&Batch {
        leader_time_ms: 3,
        submissions: vec![with_id()],
    });
    assert!(
        matches!(
            retried.results[0].outcome,
            Outcome::Session(SessionOutcome::Created { .. })
        ),
        "{:?}",
        retried.results
    );
}
