//! Retention and eviction of terminal tasks: removal when retention passes, bounded
//! per advance, eviction of the oldest terminal task from a full store, and what a
//! removed task's idempotency key and id mean afterwards.

use std::collections::BTreeSet;

use crate::codec;
use crate::limits::Replicated;
use crate::sm::tasks::{task_limits, TaskLimits};
use crate::sm::tasks::{NewTask, TaskId, TaskState};
use crate::sm::test_support::{
    batch, cancel, complete, depending_on, fail, retry, submit, task_spec, updated, Machine,
    FOREVER_MS,
};
use crate::sm::{Outcome, State};
use crate::sm::{Refusal, TaskOutcome};

// ----- retention and eviction of terminal tasks -----------------------------------

const RETENTION_MS: u64 = Replicated::TASK_RETENTION_MS;

/// The replicated task limits but for a store of at most `max_tasks`.
fn at_most(max_tasks: usize) -> TaskLimits {
    TaskLimits {
        max_tasks,
        ..TaskLimits::REPLICATED
    }
}

#[test]
fn a_succeeded_task_is_readable_until_its_retention_passes_and_then_gone() {
    let (mut m, worker, [task]) = Machine::with_worker_and_tasks(1, 0);
    let token = m.claim(10, worker);
    m.complete_ok(100, task, token, "7");
    assert_eq!(m.state.next_due_ms(), Some(100 + RETENTION_MS));
    m.apply(100 + RETENTION_MS - 1, vec![]);
    assert_eq!(m.task(task).state, TaskState::Succeeded);
    assert_eq!(m.task(task).result_json.as_deref(), Some("7"));
    m.apply(100 + RETENTION_MS, vec![]);
    assert!(m.state.tasks.get(task).is_none(), "removed");
    assert!(m.state.tasks.is_empty());
    assert_eq!(m.state.tasks.range_from(None).count(), 0);
    m.state.tasks.assert_indexes_consistent();
    // Gone as if it never existed; only the session's expiry is left to come.
    assert_eq!(
        m.apply_one(100 + RETENTION_MS, cancel(task)),
        Outcome::Task(TaskOutcome::NotFound { task_id: task })
    );
    assert_eq!(m.state.next_due_ms(), Some(FOREVER_MS));
}

#[test]
fn dead_and_cancelled_tasks_are_removed_when_their_own_retention_passes() {
    let (mut m, _, [dead, cancelled]) = Machine::with_worker_and_tasks(1, 0);
    let live = m.submit(0, task_spec(&["gpu"]));
    assert_eq!(
        m.apply_one(50, fail(dead, dead, false)),
        updated(dead, TaskState::Dead)
    );
    // The dead task's place went to `cancelled`; cancelling frees it again.
    assert_eq!(
        m.apply_one(70, cancel(cancelled)),
        updated(cancelled, TaskState::Cancelled)
    );
    assert_eq!(m.state.tasks.oldest_terminal(), Some((50, dead)));
    m.apply(50 + RETENTION_MS - 1, vec![]);
    assert_eq!(m.task(dead).state, TaskState::Dead);
    assert_eq!(m.task(cancelled).state, TaskState::Cancelled);
    m.apply(50 + RETENTION_MS, vec![]);
    assert!(m.state.tasks.get(dead).is_none(), "dead removed");
    assert_eq!(m.task(cancelled).state, TaskState::Cancelled);
    m.apply(70 + RETENTION_MS - 1, vec![]);
    assert_eq!(m.task(cancelled).state, TaskState::Cancelled);
    m.apply(70 + RETENTION_MS, vec![]);
    assert!(m.state.tasks.get(cancelled).is_none(), "cancelled removed");
    // A live task is never removed, however old.
    m.apply(10 * RETENTION_MS, vec![]);
    assert_eq!(m.task(live).state, TaskState::Queued);
    assert_eq!(m.state.tasks.len(), 1);
    m.state.tasks.assert_indexes_consistent();
}

#[test]
fn retrying_a_dead_task_restarts_its_retention_from_its_next_end() {
    let (mut m, _, [task]) = Machine::with_worker_and_tasks(1, 0);
    m.apply_one(10, fail(task, task, false));
    let retried = match m.apply_one(20, retry(task)) {
        Outcome::Task(TaskOutcome::Updated { state, .. }) => state,
        other => panic!("{other:?}"),
    };
    assert_eq!(retried, TaskState::Assigned);
    assert_eq!(m.state.tasks.oldest_terminal(), None, "live again");
    let token = m.task(task).fencing_token;
    m.apply_one(30, complete(task, token, "null"));
    m.apply(10 + RETENTION_MS, vec![]);
    assert_eq!(m.task(task).state, TaskState::Succeeded, "counted from 30");
    m.apply(30 + RETENTION_MS, vec![]);
    assert!(m.state.tasks.get(task).is_none());
}

#[test]
fn removal_is_bounded_per_advance_oldest_first_and_the_rest_follow_on_later_batches() {
    let extra = 5;
    let total = Replicated::TASK_GC_BATCH + extra;
    let mut state = State::default();
    let submitted = state.apply_batch(&batch(
        0,
        (0..total).map(|_| submit(task_spec(&[]))).collect(),
    ));
    let ids: Vec<TaskId> = submitted
        .results
        .iter()
        .map(|applied| match applied.outcome {
            Outcome::Task(TaskOutcome::Submitted { task_id, .. }) => task_id,
            ref other => panic!("{other:?}"),
        })
        .collect();
    // The last `extra` end first, so they are the oldest terminal tasks.
    state.apply_batch(&batch(
        1,
        ids[total - extra..].iter().map(|id| cancel(*id)).collect(),
    ));
    state.apply_batch(&batch(
        2,
        ids[..total - extra].iter().map(|id| cancel(*id)).collect(),
    ));
    assert_eq!(state.tasks.terminal_len(), total);
    state.apply_batch(&batch(2 + RETENTION_MS, vec![]));
    // One advance removes one batch: the `extra` oldest, then by end time and id.
    assert_eq!(state.tasks.len(), extra);
    let left: Vec<TaskId> = state.tasks.range_from(None).map(|t| t.id).collect();
    assert_eq!(left, ids[total - 2 * extra..total - extra]);
    assert!(
        state
            .next_due_ms()
            .is_some_and(|at| at <= state.cluster_time_ms),
        "the rest is still due"
    );
    state.tasks.assert_indexes_consistent();
    // The next batch, even at the same time, goes on.
    state.apply_batch(&batch(2 + RETENTION_MS, vec![]));
    assert!(state.tasks.is_empty());
    assert_eq!(state.next_due_ms(), None);
}

#[test]
fn removal_per_advance_follows_the_gc_batch_limit() {
    let limits = TaskLimits {
        gc_batch: 3,
        ..TaskLimits::REPLICATED
    };
    task_limits::with(limits, || {
        let mut m = Machine::default();
        let ids: Vec<TaskId> = (0..8).map(|_| m.submit(0, task_spec(&[]))).collect();
        m.apply(1, ids.iter().map(|id| cancel(*id)).collect());
        let mut sizes = Vec::new();
        for _ in 0..4 {
            m.apply(1 + RETENTION_MS, vec![]);
            sizes.push(m.state.tasks.len());
            m.state.tasks.assert_indexes_consistent();
        }
        assert_eq!(sizes, vec![5, 2, 0, 0]);
    });
}

/// Four tasks at most, and retention long enough never to pass.
const FOUR_TASKS: TaskLimits = TaskLimits {
    max_tasks: 4,
    ..TaskLimits::REPLICATED
};

#[test]
fn a_submit_into_a_full_store_evicts_the_oldest_terminal_task_and_refuses_only_when_all_are_live() {
    task_limits::with(FOUR_TASKS, || {
        let mut m = Machine::default();
        let ids: Vec<TaskId> = (0..4).map(|_| m.submit(0, task_spec(&[]))).collect();
        // Ended at 5 (two at once: by id) and at 10; the first stays live.
        m.apply(5, vec![cancel(ids[3]), cancel(ids[2])]);
        m.apply(10, vec![cancel(ids[1])]);
        let mut evicted = Vec::new();
        for time in [20, 21, 22] {
            let before: BTreeSet<TaskId> = m.state.tasks.range_from(None).map(|t| t.id).collect();
            let task = m.submit(time, task_spec(&[]));
            assert_eq!(m.task(task).state, TaskState::Queued);
            assert_eq!(m.state.tasks.len(), 4);
            let after: BTreeSet<TaskId> = m.state.tasks.range_from(None).map(|t| t.id).collect();
            evicted.extend(before.difference(&after).copied());
            m.state.tasks.assert_indexes_consistent();
        }
        assert_eq!(evicted, vec![ids[2], ids[3], ids[1]]);
        // Four live tasks: refused, and nothing changes but the command index.
        let before = m.state.clone();
        let outcome = m.apply_one(23, submit(task_spec(&[])));
        assert!(
            matches!(outcome, Outcome::Refused(Refusal::LimitReached { .. })),
            "{outcome:?}"
        );
        let mut unchanged = before;
        unchanged.cluster_time_ms = 23;
        unchanged.last_command_index += 1;
        assert!(m.state == unchanged, "a refusal changes nothing");
        assert!(m.state.tasks.get(ids[0]).is_some());
    });
}

#[test]
fn a_full_store_never_evicts_a_dependency_of_the_submitted_task() {
    task_limits::with(at_most(2), || {
        let (mut m, _, [root]) = Machine::with_worker_and_tasks(1, 0);
        m.apply_one(1, complete(root, root, "null"));
        let running = m.submit(2, task_spec(&[]));
        assert_eq!(m.task(running).state, TaskState::Assigned);
        let outcome = m.apply_one(3, submit(depending_on(&[root])));
        assert!(
            matches!(outcome, Outcome::Refused(Refusal::LimitReached { .. })),
            "{outcome:?}"
        );
        assert_eq!(m.task(root).state, TaskState::Succeeded);
        // Without the dependency, the succeeded root makes room.
        let next = m.submit(4, task_spec(&[]));
        assert!(m.state.tasks.get(root).is_none());
        assert_eq!(m.task(next).state, TaskState::Queued);
    });
}

#[test]
fn an_idempotency_key_is_reusable_and_a_dependency_unknown_once_its_task_is_removed() {
    let mut m = Machine::default();
    let keyed = || NewTask {
        idempotency_key: Some("nightly".into()),
        ..task_spec(&[])
    };
    let first = m.submit(0, keyed());
    m.apply_one(1, cancel(first));
    assert_eq!(
        m.apply_one(2, submit(keyed())),
        Outcome::Task(TaskOutcome::Submitted {
            task_id: first,
            state: TaskState::Cancelled,
            existing: true
        }),
        "kept while retained"
    );
    m.apply(1 + RETENTION_MS, vec![]);
    assert!(m.state.tasks.get(first).is_none());
    assert_eq!(m.state.tasks.by_idempotency_key("nightly"), None);
    let second = match m.apply_one(2 + RETENTION_MS, submit(keyed())) {
        Outcome::Task(TaskOutcome::Submitted {
            task_id,
            existing: false,
            state: TaskState::Queued,
        }) => task_id,
        other => panic!("{other:?}"),
    };
    assert_ne!(second, first);
    assert_eq!(m.state.tasks.by_idempotency_key("nightly"), Some(second));
    // Naming the removed task is refused like naming one that never existed.
    assert_eq!(
        m.apply_one(3 + RETENTION_MS, submit(depending_on(&[second, first]))),
        Outcome::Task(TaskOutcome::NotFound { task_id: first })
    );
    assert_eq!(m.state.tasks.len(), 1);
    assert!(m.task(second).dependents.is_empty());
    m.state.tasks.assert_indexes_consistent();
}

#[test]
fn removed_ids_left_in_dependency_lists_are_skipped() {
    let mut m = Machine::default();
    let long_lease = |required: &[&str]| NewTask {
        lease_ms: FOREVER_MS,
        ..task_spec(required)
    };
    let a = m.submit(0, long_lease(&[]));
    let c = m.submit(0, long_lease(&[]));
    let on_a = m.submit(0, depending_on(&[a]));
    let on_both = m.submit(0, depending_on(&[a, c]));
    let on_c = m.submit(0, depending_on(&[c]));
    // Cancelled dependents: `a` and `c` list them after they are gone.
    m.apply(1, vec![cancel(on_a), cancel(on_c)]);
    let worker = m.session(1, &[], 1, FOREVER_MS);
    assert_eq!(m.assigned(worker), vec![a]);
    let a_token = m.task(a).fencing_token;
    m.complete_ok(2, a, a_token, "1");
    assert_eq!(
        m.task(on_both).state,
        TaskState::Pending,
        "still waits on c"
    );
    let c_token = m.task(c).fencing_token;
    assert_eq!(m.task(c).state, TaskState::Assigned);
    // `a`, `on_a` and `on_c` go; `c` and `on_both` stay, naming them.
    m.apply(2 + RETENTION_MS, vec![]);
    for gone in [a, on_a, on_c] {
        assert!(m.state.tasks.get(gone).is_none(), "{gone} removed");
    }
    assert_eq!(m.task(c).dependents, vec![on_both, on_c]);
    assert_eq!(m.task(on_both).spec.depends_on, vec![a, c]);
    // Completing `c` skips the removed dependent and readies the other, whose
    // removed dependency had succeeded.
    m.complete_ok(3 + RETENTION_MS, c, c_token, "2");
    assert_eq!(m.task(on_both).state, TaskState::Assigned);
    m.state.tasks.assert_indexes_consistent();
}

#[test]
fn a_decoded_snapshot_rebuilds_the_terminal_index_and_removes_exactly_as_the_original() {
    let (mut original, _, [done]) = Machine::with_worker_and_tasks(1, 0);
    original.apply_one(5, complete(done, done, "null"));
    let dead = original.submit(6, task_spec(&[]));
    original.apply_one(7, fail(dead, dead, false));
    let queued = original.submit(8, task_spec(&["gpu"]));
    let dropped = original.submit(8, task_spec(&["gpu"]));
    original.apply_one(8, cancel(dropped));
    assert_eq!(original.state.tasks.terminal_len(), 3);
    let bytes = codec::encode(&original.state).expect("encodes");
    let mut restored = Machine {
        state: codec::decode(&bytes).expect("decodes"),
    };
    assert!(restored.state == original.state, "terminal index rebuilt");
    restored.state.tasks.assert_indexes_consistent();
    assert_eq!(
        restored.state.tasks.oldest_terminal(),
        Some((5, done)),
        "by end time"
    );
    assert_eq!(
        codec::encode(&restored.state).expect("encodes"),
        bytes,
        "the derived index is not in the snapshot"
    );
    // The same batches afterwards: same outcomes, same removals (by retention, then
    // an eviction from a store of at most three), same bytes.
    let three = at_most(3);
    let more = |m: &mut Machine| {
        let mut outcomes = m.apply(7 + RETENTION_MS, vec![submit(task_spec(&["gpu"]))]);
        let mut left = vec![m.state.tasks.range_from(None).map(|t| t.id).collect()];
        outcomes.extend(task_limits::with(three, || {
            m.apply(9 + RETENTION_MS, vec![submit(task_spec(&["gpu"]))])
        }));
        left.push(
            m.state
                .tasks
                .range_from(None)
                .map(|t| t.id)
                .collect::<Vec<_>>(),
        );
        (outcomes, left)
    };
    let (outcomes, left) = more(&mut original);
    assert_eq!(more(&mut restored), (outcomes, left.clone()));
    assert!(
        !left[0].contains(&done) && !left[0].contains(&dead),
        "expired"
    );
    assert!(left[0].contains(&queued) && left[0].contains(&dropped));
    assert!(!left[1].contains(&dropped), "evicted");
    assert_eq!(left[1].len(), 3);
    assert!(restored.state == original.state);
    assert_eq!(
        codec::encode(&restored.state).expect("encodes"),
        codec::encode(&original.state).expect("encodes")
    );
    restored.state.tasks.assert_indexes_consistent();
}
