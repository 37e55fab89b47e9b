//! Scale tests of assignment: its cost must not grow with the number of queued tasks
//! nobody can take, nor (for a capability few sessions have) with the number of
//! sessions. Work is counted, never timed; timings are printed for information only.

use crate::sm::tasks::TaskCommand;
use std::time::Instant;

use super::tasks::work;
use super::tasks::{NewTask, TaskId, TaskState};
use super::test_support::{create_session, run, task_spec, FOREVER_MS};
use super::{Command, Outcome, State};
use crate::sm::TaskOutcome;

const SESSIONS: usize = 10_000;
const UNPLACEABLE_TASKS: usize = 100_000;
const MORE_OPERATIONS: usize = 1_000;
/// The most steps (queue heads visited plus capability profiles examined) one
/// assignment may take here: at most three queued capability sets, three session
/// profiles and one assignment per command. A full queue walk would be ~100,000.
const MAX_STEPS_PER_ASSIGNMENT: usize = 10;

/// A session that never expires.
fn session(capabilities: &[&str], capacity: u32) -> Command {
    create_session(capabilities, capacity, FOREVER_MS)
}

/// A task whose lease never runs out.
fn submit(required: &[&str], priority: i32) -> Command {
    Command::Task(TaskCommand::Submit(NewTask {
        priority,
        lease_ms: FOREVER_MS,
        ..task_spec(required)
    }))
}

fn submitted(outcome: &Outcome) -> (TaskId, TaskState) {
    match outcome {
        Outcome::Task(TaskOutcome::Submitted { task_id, state, .. }) => (*task_id, *state),
        other => panic!("not submitted: {other:?}"),
    }
}

#[test]
fn assignment_cost_does_not_grow_with_unplaceable_queued_tasks_or_sessions() {
    let mut state = State::default();
    let started = Instant::now();
    // Many sessions with room: most can run "x", a few also "rare".
    let sessions: Vec<Command> = (0..SESSIONS)
        .map(|i| {
            if i % 1_000 == 0 {
                session(&["x", "rare"], 2)
            } else {
                session(&["x"], 2)
            }
        })
        .collect();
    run(&mut state, 1, sessions);
    let created = started.elapsed();
    work::take();

    // A large queue nobody can take, at every priority.
    let started = Instant::now();
    for chunk in 0..UNPLACEABLE_TASKS / 1_000 {
        let commands = (0..1_000)
            .map(|i| submit(&["absent"], ((chunk * 1_000 + i) % 3) as i32))
            .collect();
        for outcome in run(&mut state, 1, commands) {
            assert_eq!(submitted(&outcome).1, TaskState::Queued);
        }
    }
    let queued = started.elapsed();
    let (calls, most) = work::take();
    assert_eq!(calls, UNPLACEABLE_TASKS, "one assignment per submit");
    assert!(
        most <= MAX_STEPS_PER_ASSIGNMENT,
        "{most} steps in one assignment while queueing"
    );
    assert_eq!(state.tasks.queued_capability_sets(), 1);

    // Then more submits and completions, interleaved with more unplaceable ones.
    let started = Instant::now();
    for i in 0..MORE_OPERATIONS {
        let required: &[&str] = match i % 4 {
            0 => &["x"],
            1 => &["rare"],
            2 => &[],
            _ => &["absent", "x"],
        };
        let (task_id, task_state) = submitted(&run(&mut state, 1, vec![submit(required, 1)])[0]);
        if i % 4 == 3 {
            assert_eq!(task_state, TaskState::Queued);
            continue;
        }
        assert_eq!(task_state, TaskState::Assigned, "submit {i}");
        let token = state.tasks.get(task_id).expect("exists").fencing_token;
        let completed = run(
            &mut state,
            1,
            vec![Command::Task(TaskCommand::Complete {
                task_id,
                fencing_token: token,
                result_json: "null".into(),
            })],
        );
        assert!(
            matches!(
                completed[0],
                Outcome::Task(TaskOutcome::Updated {
                    state: TaskState::Succeeded,
                    ..
                })
            ),
            "{completed:?}"
        );
    }
    let more = started.elapsed();
    let (calls, most) = work::take();
    assert_eq!(
        calls,
        MORE_OPERATIONS + MORE_OPERATIONS * 3 / 4,
        "submits + completions"
    );
    assert!(
        most <= MAX_STEPS_PER_ASSIGNMENT,
        "{most} steps in one assignment with {} queued tasks",
        UNPLACEABLE_TASKS + MORE_OPERATIONS / 4
    );
    assert_eq!(state.tasks.queued_capability_sets(), 2);
    state.tasks.assert_indexes_consistent();
    state.sessions.assert_indexes_consistent();
    eprintln!(
        "scale: {SESSIONS} sessions created in {created:?}; {UNPLACEABLE_TASKS} unplaceable \
         tasks queued in {queued:?}; then {MORE_OPERATIONS} submits (+ completions) in {more:?} \
         ({:?} per submit)",
        more / MORE_OPERATIONS as u32
    );
}
