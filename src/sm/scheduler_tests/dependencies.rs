//! Dependencies and delays: pending until every dependency succeeded, cancelled
//! with a dead or cancelled one, refused for an unknown or repeated one;
//! `not_before` as a delay from submission.

use crate::sm::tasks::{NewTask, TaskId, TaskState};
use crate::sm::test_support::{cancel, complete, depending_on, fail, submit, task_spec, Machine};
use crate::sm::Outcome;
use crate::sm::{Refusal, TaskOutcome};

// ----- dependencies and delays ----------------------------------------------------

/// Submits at time 0 a child of `root` and a grandchild (the child's child).
fn chain(m: &mut Machine, root: TaskId) -> [TaskId; 2] {
    let child = m.submit(0, depending_on(&[root]));
    [child, m.submit(0, depending_on(&[child]))]
}

#[test]
fn a_task_is_pending_until_every_dependency_succeeded() {
    let (mut m, worker, [first, second]) = Machine::with_worker_and_tasks(2, 0);
    let outcome = m.apply_one(0, submit(depending_on(&[first, second])));
    let Outcome::Task(TaskOutcome::Submitted {
        task_id: dependent,
        state: TaskState::Pending,
        existing: false,
    }) = outcome
    else {
        panic!("not pending: {outcome:?}");
    };
    m.apply_one(1, complete(first, first, "null"));
    assert_eq!(m.task(dependent).state, TaskState::Pending);
    m.apply_one(2, complete(second, second, "null"));
    assert_eq!(m.task(dependent).session_id, Some(worker));
}

#[test]
fn a_dead_dependency_cancels_its_dependents_transitively() {
    let (mut m, _, [root]) = Machine::with_worker_and_tasks(1, 0);
    let [child, grandchild] = chain(&mut m, root);
    m.apply_one(1, fail(root, root, false));
    assert_eq!(m.task(child).state, TaskState::Cancelled);
    assert_eq!(m.task(grandchild).state, TaskState::Cancelled);
}

#[test]
fn a_cancelled_dependency_cancels_its_dependents() {
    let mut m = Machine::default();
    let root = m.submit(0, task_spec(&[]));
    let [child, grandchild] = chain(&mut m, root);
    m.apply_one(1, cancel(root));
    assert_eq!(m.task(child).state, TaskState::Cancelled);
    assert_eq!(m.task(grandchild).state, TaskState::Cancelled);
}

#[test]
fn submit_with_an_unknown_dependency_is_task_not_found_and_stores_nothing() {
    let mut m = Machine::default();
    let orphan = NewTask {
        depends_on: vec![77],
        idempotency_key: Some("once".into()),
        ..task_spec(&[])
    };
    assert_eq!(
        m.apply_one(0, submit(orphan)),
        Outcome::Task(TaskOutcome::NotFound { task_id: 77 })
    );
    assert!(m.state.tasks.is_empty());
    assert_eq!(m.state.tasks.by_idempotency_key("once"), None);
}

#[test]
fn submit_with_a_dependency_listed_twice_is_invalid() {
    let mut m = Machine::default();
    let root = m.submit(0, task_spec(&[]));
    let outcome = m.apply_one(0, submit(depending_on(&[root, root])));
    assert!(
        matches!(outcome, Outcome::Refused(Refusal::InvalidCommand { .. })),
        "{outcome:?}"
    );
    assert_eq!(m.state.tasks.len(), 1);
    assert!(m.task(root).dependents.is_empty());
}

#[test]
fn a_task_submitted_after_its_dependency_died_is_cancelled_at_once() {
    let (mut m, _, [root]) = Machine::with_worker_and_tasks(1, 0);
    m.apply_one(1, fail(root, root, false));
    let outcome = m.apply_one(2, submit(depending_on(&[root])));
    assert!(matches!(
        outcome,
        Outcome::Task(TaskOutcome::Submitted {
            state: TaskState::Cancelled,
            existing: false,
            ..
        })
    ));
}

#[test]
fn not_before_is_a_delay_from_submission() {
    let mut m = Machine::default();
    let task = m.submit(
        5_000,
        NewTask {
            not_before_ms: Some(2_000),
            ..task_spec(&[])
        },
    );
    m.assert_queued_at(task, TaskState::Pending, 7_000);
}
