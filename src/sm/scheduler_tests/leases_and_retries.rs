//! Leases, session ends, attempts and the dead-letter state, failure and backoff:
//! what requeues a task, with which error, and when it is dead or runs again.

use crate::sm::tasks::{NewTask, TaskState};
use crate::sm::test_support::{
    batch, create_session, end_session, error, fail, retry, task_spec, updated, Machine, FOREVER_MS,
};
use crate::sm::Outcome;
use crate::sm::{Refusal, TaskOutcome};

// ----- leases and session ends ----------------------------------------------------

#[test]
fn an_expired_lease_requeues_the_task_with_the_attempt_counted_and_a_lease_expired_error() {
    let (mut m, worker, [task]) = Machine::with_worker_and_tasks(1, 0);
    // Waits for the worker's only slot, and outranks `task` when it frees.
    let urgent = m.submit(
        0,
        NewTask {
            priority: 1,
            ..task_spec(&[])
        },
    );
    m.apply(999, vec![]);
    assert_eq!(m.task(task).state, TaskState::Assigned);
    m.apply(1_000, vec![]);
    let expired = m.task(task);
    assert_eq!(
        (expired.state, expired.attempts, expired.session_id),
        (TaskState::Queued, 1, None)
    );
    assert_eq!(expired.errors, vec![error(1, "lease_expired", "", 1_000)]);
    assert_eq!(m.assigned(worker), vec![urgent]);
}

#[test]
fn an_expired_lease_is_reassigned_at_once_when_a_capable_session_has_room() {
    let (mut m, worker, [task]) = Machine::with_worker_and_tasks(1, 0);
    let first_token = m.task(task).fencing_token;
    m.apply(1_000, vec![]);
    let again = m.task(task);
    assert_eq!(
        (again.state, again.session_id, again.attempts),
        (TaskState::Assigned, Some(worker), 2)
    );
    assert!(again.fencing_token > first_token);
    assert_eq!(again.lease_expires_at_ms, 2_000);
    assert_eq!(again.errors, vec![error(1, "lease_expired", "", 1_000)]);
}

#[test]
fn ending_a_session_requeues_its_tasks_with_reason_session_ended() {
    let mut m = Machine::default();
    let worker = m.session(0, &[], 2, FOREVER_MS);
    let tasks = [m.submit(0, task_spec(&[])), m.submit(0, task_spec(&[]))];
    m.apply_one(500, end_session(worker));
    for id in tasks {
        let task = m.task(id);
        assert_eq!(
            (task.state, task.attempts, task.session_id),
            (TaskState::Queued, 1, None)
        );
        assert_eq!(task.errors, vec![error(1, "session_ended", "", 500)]);
    }
}

#[test]
fn an_expiring_session_requeues_its_tasks_with_reason_session_ended() {
    let mut m = Machine::default();
    m.session(0, &[], 1, 1_000);
    let task = m.submit(
        0,
        NewTask {
            lease_ms: FOREVER_MS,
            ..task_spec(&[])
        },
    );
    m.apply(1_000, vec![]);
    assert_eq!(m.task(task).state, TaskState::Queued);
    assert_eq!(
        m.task(task).errors,
        vec![error(1, "session_ended", "", 1_000)]
    );
}

// ----- attempts and the dead-letter state -----------------------------------------

#[test]
fn after_max_attempts_unsuccessful_assignments_the_task_is_dead_with_every_error() {
    let mut m = Machine::default();
    let first = m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
    m.apply(1_000, vec![]); // attempt 1: the lease ran out; attempt 2 starts
    assert_eq!(m.task(task).attempts, 2);
    // Attempt 2 ends with its session; attempt 3 starts on the new one.
    m.apply(
        1_500,
        vec![end_session(first), create_session(&[], 1, FOREVER_MS)],
    );
    assert_eq!(m.task(task).attempts, 3);
    let token = m.task(task).fencing_token;
    assert_eq!(
        m.apply_one(1_600, fail(task, token, true)),
        updated(task, TaskState::Dead),
        "retryable, but no attempt is left"
    );
    let dead = m.task(task);
    assert_eq!((dead.state, dead.attempts), (TaskState::Dead, 3));
    assert_eq!(
        dead.errors,
        vec![
            error(1, "lease_expired", "", 1_000),
            error(2, "session_ended", "", 1_500),
            error(3, "failed", "boom", 1_600),
        ]
    );
}

#[test]
fn retry_of_a_dead_task_resets_attempts_and_runs_it_again() {
    let (mut m, worker, [task]) = Machine::with_worker_and_tasks(1, 0);
    m.apply_one(1, fail(task, task, false));
    assert_eq!(m.task(task).state, TaskState::Dead);
    let response = m.state.apply_batch(&batch(2, vec![retry(task)]));
    assert!(matches!(
        response.results[0].outcome,
        Outcome::Task(TaskOutcome::Updated { task_id, .. }) if task_id == task
    ));
    let again = m.task(task);
    assert_eq!(
        (
            again.state,
            again.session_id,
            again.attempts,
            again.fencing_token
        ),
        (
            TaskState::Assigned,
            Some(worker),
            1,
            response.results[0].index
        )
    );
    assert_eq!(again.errors.len(), 1, "the history is kept");
}

#[test]
fn retry_of_a_task_that_is_not_dead_is_wrong_state() {
    let mut m = Machine::default();
    let task = m.submit(0, task_spec(&[]));
    assert!(matches!(
        m.apply_one(1, retry(task)),
        Outcome::Refused(Refusal::WrongState { .. })
    ));
    assert_eq!(
        m.apply_one(1, retry(99)),
        Outcome::Task(TaskOutcome::NotFound { task_id: 99 })
    );
    assert_eq!(m.task(task).state, TaskState::Queued);
}

// ----- failure and backoff --------------------------------------------------------

#[test]
fn a_retryable_failure_backs_off_doubling_from_one_second_up_to_sixty() {
    let mut m = Machine::default();
    m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(
        0,
        NewTask {
            max_attempts: 10,
            lease_ms: FOREVER_MS,
            ..task_spec(&[])
        },
    );
    let mut now = 10_000;
    let mut backoffs = Vec::new();
    for _ in 0..8 {
        let token = m.task(task).fencing_token;
        assert_eq!(
            m.apply_one(now, fail(task, token, true)),
            updated(task, TaskState::Failed)
        );
        let backoff = m.task(task).not_before_ms - now;
        backoffs.push(backoff);
        now += backoff;
        m.apply(now, vec![]);
        assert_eq!(m.task(task).state, TaskState::Assigned);
    }
    assert_eq!(
        backoffs,
        vec![1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
    );
}

#[test]
fn a_failed_task_is_queued_again_only_when_its_backoff_has_passed() {
    let (mut m, worker, [task]) = Machine::with_worker_and_tasks(1, 0);
    // The worker goes too, so nothing takes the task once it is queued.
    m.apply(500, vec![fail(task, task, true), end_session(worker)]);
    m.assert_queued_at(task, TaskState::Failed, 1_500);
}

#[test]
fn a_non_retryable_failure_is_dead_at_once() {
    let (mut m, _, [task]) = Machine::with_worker_and_tasks(1, 0);
    assert_eq!(
        m.apply_one(1, fail(task, task, false)),
        updated(task, TaskState::Dead)
    );
    let dead = m.task(task);
    assert_eq!((dead.attempts, dead.spec.max_attempts), (1, 3));
    assert_eq!(dead.errors, vec![error(1, "failed", "boom", 1)]);
}
