//! Cancellation (queued, assigned, terminal) and idempotency keys.

use crate::limits::Replicated;
use crate::sm::tasks::{NewTask, TaskState};
use crate::sm::test_support::{cancel, complete, heartbeat, submit, task_spec, updated, Machine};
use crate::sm::Outcome;
use crate::sm::{Refusal, TaskOutcome};

// ----- cancel and idempotency -----------------------------------------------------

#[test]
fn cancelling_a_queued_task_makes_it_cancelled() {
    let mut m = Machine::default();
    let task = m.submit(0, task_spec(&[]));
    assert_eq!(
        m.apply_one(1, cancel(task)),
        updated(task, TaskState::Cancelled)
    );
    assert_eq!(m.task(task).state, TaskState::Cancelled);
    // Nothing is due but its removal once retention passes.
    assert_eq!(
        m.state.next_due_ms(),
        Some(1 + Replicated::TASK_RETENTION_MS)
    );
}

#[test]
fn cancelling_an_assigned_task_frees_the_session_and_tells_the_holder_on_heartbeat() {
    let (mut m, worker, [task]) = Machine::with_worker_and_tasks(1, 0);
    let token = m.claim(0, worker);
    assert_eq!(
        m.apply_one(1, cancel(task)),
        updated(task, TaskState::Cancelled)
    );
    assert_eq!(m.live_session(worker).unwrap().load, 0);
    assert!(m.assigned(worker).is_empty());
    assert_eq!(
        m.apply_one(2, heartbeat(task, token, None)),
        Outcome::Task(TaskOutcome::LeaseExtended {
            lease_expires_at_ms: 0,
            cancel_requested: true
        })
    );
}

#[test]
fn cancelling_a_terminal_task_is_wrong_state() {
    let (mut m, _, [done]) = Machine::with_worker_and_tasks(1, 0);
    m.apply_one(1, complete(done, done, "null"));
    let dropped = m.submit(1, task_spec(&[]));
    m.apply_one(2, cancel(dropped));
    for task in [done, dropped] {
        let outcome = m.apply_one(3, cancel(task));
        assert!(
            matches!(outcome, Outcome::Refused(Refusal::WrongState { .. })),
            "{outcome:?}"
        );
    }
    assert_eq!(m.task(done).state, TaskState::Succeeded);
}

#[test]
fn a_second_submit_with_the_same_idempotency_key_returns_the_first_task() {
    let mut m = Machine::default();
    let keyed = |kind: &str| {
        submit(NewTask {
            kind: kind.into(),
            idempotency_key: Some("nightly".into()),
            ..task_spec(&[])
        })
    };
    let outcomes = m.apply(0, vec![keyed("first"), keyed("second")]);
    assert_eq!(
        outcomes,
        vec![
            Outcome::Task(TaskOutcome::Submitted {
                task_id: 1,
                state: TaskState::Queued,
                existing: false
            }),
            Outcome::Task(TaskOutcome::Submitted {
                task_id: 1,
                state: TaskState::Queued,
                existing: true
            }),
        ]
    );
    assert_eq!(m.state.tasks.len(), 1);
    assert_eq!(m.task(1).spec.kind, "first");
}
