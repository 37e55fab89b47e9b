//! Claims and fencing tokens: claim, then heartbeat, complete and fail under the
//! current token; a stale token is refused and every assignment gets a fresh one.

use crate::sm::tasks::{NewTask, TaskId, TaskState};
use crate::sm::test_support::{
    claim, complete, fail, heartbeat, task_spec, updated, Machine, FOREVER_MS,
};
use crate::sm::Outcome;
use crate::sm::{Refusal, TaskOutcome};

// ----- claim ----------------------------------------------------------------------

#[test]
fn claim_returns_the_assignment_token_and_a_lease_from_now() {
    let mut m = Machine::default();
    let worker = m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(
        1_000,
        NewTask {
            lease_ms: 5_000,
            ..task_spec(&[])
        },
    );
    assert_eq!(
        m.apply_one(3_000, claim(worker)),
        Outcome::Task(TaskOutcome::Claimed {
            task_id: task,
            // Assigned during its own submit command.
            fencing_token: task,
            lease_expires_at_ms: 8_000,
        })
    );
    assert!(m.task(task).claimed);
}

#[test]
fn claim_with_nothing_assigned_is_no_task_assigned() {
    let mut m = Machine::default();
    let worker = m.session(0, &[], 1, FOREVER_MS);
    assert_eq!(
        m.apply_one(1, claim(worker)),
        Outcome::Task(TaskOutcome::NoneAssigned)
    );
}

#[test]
fn claim_for_an_unknown_session_is_session_not_found() {
    let mut m = Machine::default();
    assert_eq!(
        m.apply_one(1, claim(5)),
        Outcome::Refused(Refusal::SessionNotFound { session_id: 5 })
    );
}

#[test]
fn a_claimed_task_is_not_returned_by_the_next_claim() {
    let (mut m, worker, [first, second]) = Machine::with_worker_and_tasks(2, 1);
    let claimed: Vec<Option<TaskId>> = m
        .apply(2, vec![claim(worker), claim(worker), claim(worker)])
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Task(TaskOutcome::Claimed { task_id, .. }) => Some(task_id),
            _ => None,
        })
        .collect();
    assert_eq!(claimed, vec![Some(first), Some(second), None]);
}

// ----- heartbeat, complete, fail with fencing tokens -------------------------------

#[test]
fn heartbeat_extends_the_lease_and_stores_progress() {
    let (mut m, worker, [task]) = Machine::with_worker_and_tasks(1, 0);
    let token = m.claim(0, worker);
    assert_eq!(
        m.apply_one(600, heartbeat(task, token, Some("{\"pct\":50}"))),
        Outcome::Task(TaskOutcome::LeaseExtended {
            lease_expires_at_ms: 1_600,
            cancel_requested: false
        })
    );
    assert_eq!(m.task(task).progress_json.as_deref(), Some("{\"pct\":50}"));
    m.apply(1_000, vec![]);
    assert_eq!(
        (m.task(task).state, m.task(task).fencing_token),
        (TaskState::Assigned, token),
        "the first lease's end passed harmlessly"
    );
}

#[test]
fn heartbeat_with_a_wrong_token_is_stale_and_reports_the_current_token() {
    let (mut m, worker, [task]) = Machine::with_worker_and_tasks(1, 0);
    let token = m.claim(0, worker);
    assert_eq!(
        m.apply_one(500, heartbeat(task, token + 100, Some("{}"))),
        Outcome::Refused(Refusal::StaleFencingToken { current: token })
    );
    assert_eq!(m.task(task).progress_json, None);
    assert_eq!(m.task(task).lease_expires_at_ms, 1_000);
}

#[test]
fn complete_with_the_current_token_succeeds_and_stores_the_result() {
    let (mut m, worker, [task]) = Machine::with_worker_and_tasks(1, 0);
    let token = m.claim(0, worker);
    m.complete_ok(10, task, token, "{\"ok\":true}");
    assert_eq!(m.task(task).result_json.as_deref(), Some("{\"ok\":true}"));
    assert_eq!(m.live_session(worker).unwrap().load, 0);
    assert!(m.assigned(worker).is_empty());
}

#[test]
fn after_a_lease_expires_and_the_task_moves_the_old_token_is_stale_and_the_new_one_works() {
    let mut m = Machine::default();
    let old_holder = m.session(0, &["x"], 1, FOREVER_MS);
    let new_holder = m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
    // Only the old holder can run this one; it waits, and goes first when room opens.
    let urgent = m.submit(
        0,
        NewTask {
            priority: 1,
            ..task_spec(&["x"])
        },
    );
    assert_eq!(m.task(task).session_id, Some(old_holder));
    let old = m.task(task).fencing_token;
    m.apply(1_000, vec![]);
    assert_eq!(m.task(urgent).session_id, Some(old_holder));
    assert_eq!(m.task(task).session_id, Some(new_holder));
    let new = m.task(task).fencing_token;
    assert!(new > old);
    assert_eq!(
        m.apply(
            1_100,
            vec![
                fail(task, old, true),
                complete(task, old, "null"),
                complete(task, new, "null"),
            ]
        ),
        vec![
            Outcome::Refused(Refusal::StaleFencingToken { current: new }),
            Outcome::Refused(Refusal::StaleFencingToken { current: new }),
            updated(task, TaskState::Succeeded),
        ]
    );
}

#[test]
fn every_assignment_gets_a_fresh_fencing_token_even_with_no_command_in_between() {
    let mut m = Machine::default();
    let first = m.session(0, &[], 1, 2_000);
    let second = m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
    m.apply(1_000, vec![]); // the lease ran out: assigned to `first` again (lower id)
    assert_eq!(m.task(task).session_id, Some(first));
    let first_token = m.task(task).fencing_token;
    m.apply(2_000, vec![]); // `first` expired: the task moves to `second`
    assert_eq!(m.task(task).session_id, Some(second));
    let second_token = m.task(task).fencing_token;
    assert_eq!(
        m.apply_one(2_100, complete(task, first_token, "null")),
        Outcome::Refused(Refusal::StaleFencingToken {
            current: second_token
        }),
        "the ended session's token {first_token} must not complete the new holder's {second_token}"
    );
}
