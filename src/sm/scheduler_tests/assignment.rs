//! Assignment: required capabilities, least load then lower id, capacity,
//! priority then FIFO, assignment when room opens, and the capability-set queues
//! (an unplaceable set blocks nothing; a decoded snapshot assigns as the original).

use crate::codec;
use crate::sm::sessions::SessionId;
use crate::sm::tasks::{NewTask, TaskId, TaskState};
use crate::sm::test_support::{
    batch, complete, create_session, submit, task_spec, Machine, FOREVER_MS,
};

// ----- assignment -----------------------------------------------------------------

#[test]
fn a_task_goes_only_to_a_session_with_every_required_capability() {
    let mut m = Machine::default();
    let cpu = m.session(0, &["cpu"], 5, FOREVER_MS);
    let both = m.session(0, &["cpu", "gpu"], 5, FOREVER_MS);
    let gpu_task = m.submit(1, task_spec(&["gpu", "cpu"]));
    assert_eq!(m.task(gpu_task).session_id, Some(both));
    let tpu_task = m.submit(1, task_spec(&["tpu"]));
    assert_eq!(m.task(tpu_task).state, TaskState::Queued);
    assert_eq!(m.assigned(cpu), Vec::<TaskId>::new());
}

#[test]
fn the_least_loaded_session_gets_the_task_and_ties_go_to_the_lower_id() {
    let mut m = Machine::default();
    let first = m.session(0, &[], 3, FOREVER_MS);
    let second = m.session(0, &[], 3, FOREVER_MS);
    let owners: Vec<Option<SessionId>> = (0..4)
        .map(|_| {
            let id = m.submit(1, task_spec(&[]));
            m.task(id).session_id
        })
        .collect();
    assert_eq!(
        owners,
        vec![Some(first), Some(second), Some(first), Some(second)]
    );
}

#[test]
fn a_session_never_holds_more_tasks_than_its_capacity() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 2, FOREVER_MS);
    let tasks: Vec<TaskId> = (0..5).map(|_| m.submit(1, task_spec(&[]))).collect();
    assert_eq!(m.live_session(id).unwrap().load, 2);
    assert_eq!(m.assigned(id), tasks[..2].to_vec());
    assert!(tasks[2..]
        .iter()
        .all(|task| m.task(*task).state == TaskState::Queued));
}

#[test]
fn higher_priority_is_assigned_first_and_fifo_within_a_priority() {
    let mut m = Machine::default();
    let mut submit_with = |priority| {
        m.submit(
            0,
            NewTask {
                priority,
                ..task_spec(&[])
            },
        )
    };
    let low_first = submit_with(0);
    let high_first = submit_with(2);
    let low_second = submit_with(0);
    let high_second = submit_with(2);
    let middle = submit_with(1);
    let worker = m.session(1, &[], 1, FOREVER_MS);
    let mut order = Vec::new();
    for time in 2..7 {
        let [current] = m.assigned(worker)[..] else {
            panic!("one task at a time");
        };
        order.push(current);
        let token = m.task(current).fencing_token;
        m.apply_one(time, complete(current, token, "null"));
    }
    assert_eq!(
        order,
        vec![high_first, high_second, middle, low_first, low_second]
    );
}

#[test]
fn a_queued_task_waits_for_a_capable_session_and_is_assigned_when_one_registers() {
    let mut m = Machine::default();
    m.session(0, &["cpu"], 1, FOREVER_MS);
    let task = m.submit(1, task_spec(&["gpu"]));
    m.apply(2, vec![]);
    assert_eq!(m.task(task).state, TaskState::Queued);
    let gpu = m.session(3, &["gpu"], 1, FOREVER_MS);
    let assigned = m.task(task);
    assert_eq!(
        (assigned.state, assigned.session_id, assigned.fencing_token),
        (TaskState::Assigned, Some(gpu), gpu),
        "assigned during the session's own create command"
    );
}

#[test]
fn completing_a_task_frees_capacity_and_the_next_queued_task_is_assigned_in_the_same_apply() {
    let (mut m, worker, [first, second]) = Machine::with_worker_and_tasks(1, 1);
    assert_eq!(m.task(second).state, TaskState::Queued);
    let response = m
        .state
        .apply_batch(&batch(2, vec![complete(first, first, "null")]));
    let next = m.task(second);
    assert_eq!(
        (next.state, next.session_id, next.fencing_token),
        (TaskState::Assigned, Some(worker), response.results[0].index)
    );
}

// ----- assignment through the capability-set queues -------------------------------

#[test]
fn an_unplaceable_capability_set_does_not_block_later_sets_or_its_own_successors() {
    let mut m = Machine::default();
    let gpu = m.submit(
        0,
        NewTask {
            priority: 9,
            ..task_spec(&["gpu"])
        },
    );
    let first = m.submit(0, task_spec(&["cpu"]));
    let second = m.submit(0, task_spec(&["cpu"]));
    let third = m.submit(0, task_spec(&["cpu"]));
    let any = m.submit(0, task_spec(&[]));
    // Room for three: the gpu task cannot go, the first two cpu tasks and the
    // capability-free one (all priority 0, so by id) fill it in one assignment.
    let worker = m.session(1, &["cpu"], 3, FOREVER_MS);
    assert_eq!(m.assigned(worker), vec![first, second, third]);
    assert_eq!(m.task(gpu).state, TaskState::Queued);
    assert_eq!(m.task(any).state, TaskState::Queued);
    assert_eq!(m.state.tasks.queued_capability_sets(), 2);
    m.state.tasks.assert_indexes_consistent();
    m.state.sessions.assert_indexes_consistent();
}

#[test]
fn the_best_session_is_found_among_capability_profiles_by_load_then_id() {
    let mut m = Machine::default();
    let ab = m.session(0, &["a", "b"], 2, FOREVER_MS);
    let abc = m.session(0, &["a", "b", "c"], 2, FOREVER_MS);
    let b = m.session(0, &["b"], 5, FOREVER_MS);
    let first = m.submit(1, task_spec(&["a"]));
    let second = m.submit(1, task_spec(&["a"]));
    let third = m.submit(1, task_spec(&["a", "b"]));
    let on_b = m.submit(1, task_spec(&["b"]));
    let fifth = m.submit(1, task_spec(&["b", "a"]));
    // Loads 0/0: the lower id; then the other; then the tie again by id.
    assert_eq!(m.task(first).session_id, Some(ab));
    assert_eq!(m.task(second).session_id, Some(abc));
    assert_eq!(m.task(third).session_id, Some(ab));
    assert_eq!(m.task(on_b).session_id, Some(b));
    assert_eq!(m.task(fifth).session_id, Some(abc));
    // Both full now: another "a" task waits, and "c" only fits the full abc session.
    let waits = m.submit(2, task_spec(&["c"]));
    assert_eq!(m.task(waits).state, TaskState::Queued);
    let token = m.task(second).fencing_token;
    m.apply_one(3, complete(second, token, "null"));
    assert_eq!(m.task(waits).session_id, Some(abc));
    m.state.sessions.assert_indexes_consistent();
}

#[test]
fn a_decoded_snapshot_rebuilds_the_queues_and_assigns_exactly_as_the_original() {
    let mut original = Machine::default();
    original.session(0, &["a"], 1, FOREVER_MS);
    original.session(0, &["a", "b"], 1, FOREVER_MS);
    for (priority, required) in [(0, &["a"][..]), (2, &["b"]), (1, &["c"]), (1, &["a"])] {
        original.submit(
            1,
            NewTask {
                priority,
                ..task_spec(required)
            },
        );
    }
    original.submit(1, task_spec(&["a", "b"]));
    let bytes = codec::encode(&original.state).expect("encodes");
    let mut restored = Machine {
        state: codec::decode(&bytes).expect("decodes"),
    };
    assert!(
        restored.state == original.state,
        "indexes rebuilt on decode"
    );
    restored.state.tasks.assert_indexes_consistent();
    restored.state.sessions.assert_indexes_consistent();
    assert!(restored.state.tasks.queued_capability_sets() > 0);
    // The same commands afterwards: same outcomes, same state, same bytes.
    let more = |m: &mut Machine| {
        let mut outcomes = Vec::new();
        for id in m
            .state
            .tasks
            .range_from(None)
            .map(|t| t.id)
            .collect::<Vec<_>>()
        {
            let task = m.task(id).clone();
            if task.state == TaskState::Assigned {
                outcomes.push(m.apply_one(2, complete(id, task.fencing_token, "null")));
            }
        }
        outcomes.push(m.apply_one(3, create_session(&["c", "a"], 2, FOREVER_MS)));
        outcomes.push(m.apply_one(4, submit(task_spec(&["a"]))));
        outcomes
    };
    assert_eq!(more(&mut original), more(&mut restored));
    assert!(restored.state == original.state);
    assert_eq!(
        codec::encode(&restored.state).expect("encodes"),
        codec::encode(&original.state).expect("encodes")
    );
    restored.state.tasks.assert_indexes_consistent();
}
