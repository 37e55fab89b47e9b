//! `FinishAndClaim` (`complete`/`fail` with `claim_next`): the finish, the
//! assignment the freed capacity allows and the holder's claim in one command; a
//! refused finish claims nothing; a cluster not yet at format 8 refuses it.

use crate::sm::tasks::{TaskCommand, TaskState};
use crate::sm::test_support::{claim, complete, fail, task_spec, updated, Machine, FOREVER_MS};
use crate::sm::{Command, Outcome, Refusal, TaskOutcome};

fn and_claim(finish: Command) -> Command {
    let Command::Task(finish) = finish else {
        panic!("a task command")
    };
    Command::Task(TaskCommand::FinishAndClaim {
        finish: Box::new(finish),
    })
}

/// A machine at format 8 with one worker of capacity 1 holding the first of two
/// tasks (claimed); the second is queued behind the capacity.
fn upgraded_worker_with_two_tasks() -> (Machine, u64, [u64; 2], u64) {
    let mut m = Machine::default();
    m.state.upgrade(8);
    let worker = m.session(0, &[], 1, FOREVER_MS);
    let first = m.submit(1, task_spec(&[]));
    let second = m.submit(1, task_spec(&[]));
    let token = m.claim(2, worker);
    assert_eq!(m.task(second).state, TaskState::Queued);
    (m, worker, [first, second], token)
}

#[test]
fn a_complete_with_claim_next_assigns_and_claims_the_next_task_in_one_command() {
    let (mut m, worker, [first, second], token) = upgraded_worker_with_two_tasks();
    let index_before = m.state.last_command_index;
    let outcome = m.apply_one(10, and_claim(complete(first, token, "\"ok\"")));
    let Outcome::Task(TaskOutcome::Finished { finished, next }) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        Outcome::Task(*finished),
        updated(first, TaskState::Succeeded)
    );
    let TaskOutcome::Claimed {
        task_id,
        fencing_token,
        ..
    } = *next
    else {
        panic!("{next:?}")
    };
    assert_eq!(task_id, second);
    assert_eq!(m.state.last_command_index, index_before + 1, "one command");
    // Assigned by this command: its token is this command's index.
    assert_eq!(fencing_token, index_before + 1);
    assert!(m.task(second).claimed);
    assert_eq!(m.task(second).session_id, Some(worker));
    assert_eq!(m.task(first).result_json.as_deref(), Some("\"ok\""));
}

#[test]
fn a_fail_with_claim_next_requeues_or_dead_letters_and_claims_the_next() {
    let (mut m, _, [first, second], token) = upgraded_worker_with_two_tasks();
    let outcome = m.apply_one(10, and_claim(fail(first, token, false)));
    let Outcome::Task(TaskOutcome::Finished { finished, next }) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(Outcome::Task(*finished), updated(first, TaskState::Dead));
    assert!(matches!(*next, TaskOutcome::Claimed { task_id, .. } if task_id == second));
}

#[test]
fn with_nothing_ready_the_finish_applies_and_the_claim_finds_none() {
    let (mut m, worker, [first, second], token) = upgraded_worker_with_two_tasks();
    m.complete_ok(5, first, token, "1");
    let token = m.claim(6, worker);
    let outcome = m.apply_one(10, and_claim(complete(second, token, "2")));
    assert_eq!(
        outcome,
        Outcome::Task(TaskOutcome::Finished {
            finished: Box::new(TaskOutcome::Updated {
                task_id: second,
                state: TaskState::Succeeded
            }),
            next: Box::new(TaskOutcome::NoneAssigned),
        })
    );
}

#[test]
fn a_stale_token_refuses_the_finish_and_claims_nothing() {
    let (mut m, worker, [first, second], token) = upgraded_worker_with_two_tasks();
    let outcome = m.apply_one(10, and_claim(complete(first, token + 100, "x")));
    assert_eq!(
        outcome,
        Outcome::Refused(Refusal::StaleFencingToken { current: token })
    );
    assert_eq!(m.task(first).state, TaskState::Assigned);
    assert_eq!(m.task(second).state, TaskState::Queued);
    assert!(m.state.tasks.assigned_to(worker) == vec![first]);
}

#[test]
fn only_a_complete_or_a_fail_may_claim_next_and_only_at_format_8() {
    let (mut m, worker, [first, _], token) = upgraded_worker_with_two_tasks();
    assert!(matches!(
        m.apply_one(10, and_claim(claim(worker))),
        Outcome::Refused(Refusal::InvalidCommand { .. })
    ));
    let mut legacy = Machine::default();
    let worker = legacy.session(0, &[], 1, FOREVER_MS);
    let task = legacy.submit(1, task_spec(&[]));
    let legacy_token = legacy.claim(2, worker);
    assert!(matches!(
        legacy.apply_one(10, and_claim(complete(task, legacy_token, "x"))),
        Outcome::Refused(Refusal::InvalidCommand { .. })
    ));
    assert_eq!(legacy.task(task).state, TaskState::Assigned);
    m.complete_ok(11, first, token, "still fine");
}
