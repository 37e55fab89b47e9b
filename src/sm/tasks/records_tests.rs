//! The task records and indexes are persistent maps and sets since #16: they must
//! encode byte for byte as the `BTreeMap`s and `BTreeSet`s of the previous release
//! (whose snapshots and logs hold them), decode from those bytes with every derived
//! index rebuilt, and clone as a pointer copy that later writes leave alone.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::*;
use crate::codec;
use crate::sm::test_support::task_spec;

/// `Tasks` as the previous release serialized it: the same fields, in the same order,
/// as std's ordered collections.
#[derive(Serialize)]
struct PreviousTasks {
    by_id: BTreeMap<TaskId, Task>,
    queued: BTreeSet<QueuePosition>,
    timers: BTreeSet<(u64, TaskId)>,
    by_session: BTreeMap<SessionId, BTreeSet<TaskId>>,
    by_idempotency_key: BTreeMap<String, TaskId>,
}

fn task(id: TaskId, state: TaskState) -> Task {
    let required: &[&str] = if id % 4 == 0 {
        &["gpu"]
    } else {
        &["cpu", "gpu"]
    };
    let mut spec = task_spec(required);
    spec.priority = (id % 3) as i32;
    spec.idempotency_key = (id % 4 == 0).then(|| format!("key-{id}"));
    Task {
        id,
        spec,
        state,
        attempts: u32::from(state != TaskState::Queued),
        not_before_ms: 0,
        session_id: (state == TaskState::Assigned).then_some(id % 5 + 1),
        fencing_token: id * 10,
        lease_expires_at_ms: 0,
        claimed: state == TaskState::Assigned,
        progress_json: None,
        cancel_requested: false,
        result_json: (state == TaskState::Succeeded).then(|| "{}".into()),
        errors: Vec::new(),
        dependents: Vec::new(),
        created_at_ms: 1_000 + id,
        updated_at_ms: 2_000 + id,
        timer_ms: (state == TaskState::Assigned || state == TaskState::Pending)
            .then_some(5_000 + id),
    }
}

fn stored_tasks() -> Tasks {
    let states = [
        TaskState::Queued,
        TaskState::Assigned,
        TaskState::Pending,
        TaskState::Succeeded,
        TaskState::Dead,
        TaskState::Cancelled,
    ];
    let mut tasks = Tasks::default();
    for id in 1..=60 {
        tasks.insert(task(id, states[id as usize % states.len()]));
    }
    tasks
}

fn previous(tasks: &Tasks) -> PreviousTasks {
    PreviousTasks {
        by_id: tasks.by_id.clone().into_iter().collect(),
        queued: tasks.queued.clone().into_iter().collect(),
        timers: tasks.timers.clone().into_iter().collect(),
        by_session: tasks
            .by_session
            .clone()
            .into_iter()
            .map(|(session, ids)| (session, ids.into_iter().collect()))
            .collect(),
        by_idempotency_key: tasks.by_idempotency_key.clone().into_iter().collect(),
    }
}

#[test]
fn tasks_encode_byte_for_byte_as_the_btree_collections_they_replaced() {
    let tasks = stored_tasks();
    let old = previous(&tasks);
    // Every index is populated, so each field's encoding is compared, not just empties.
    assert!(!old.queued.is_empty() && !old.timers.is_empty());
    assert!(!old.by_session.is_empty() && !old.by_idempotency_key.is_empty());
    let old_bytes = codec::encode(&old).expect("encode");
    assert_eq!(codec::encode(&tasks).expect("encode"), old_bytes);

    let read: Tasks = codec::decode(&old_bytes).expect("decode");
    assert_eq!(read, tasks, "decoding rebuilds the derived indexes too");
    read.assert_indexes_consistent();
    assert_eq!(read.terminal_len(), 30);
    assert_eq!(read.queued_capability_sets(), 2);
}

#[test]
fn a_clone_of_the_tasks_is_a_pointer_copy_that_later_writes_leave_alone() {
    let mut tasks = stored_tasks();
    let copy = tasks.clone();
    assert!(copy.by_id.ptr_eq(&tasks.by_id), "the records are shared");
    assert!(copy.queued.ptr_eq(&tasks.queued), "an index is shared");
    let before = codec::encode(&copy).expect("encode");

    tasks.update(1, |task| task.state = TaskState::Succeeded);
    tasks.remove(2);
    tasks.insert(task(61, TaskState::Queued));
    tasks.assert_indexes_consistent();

    assert_eq!(codec::encode(&copy).expect("encode"), before);
    copy.assert_indexes_consistent();
    assert_eq!(copy.get(1).map(|t| t.state), Some(TaskState::Assigned));
    assert!(copy.get(2).is_some() && copy.get(61).is_none());
    assert_eq!((copy.len(), tasks.len()), (60, 60));
}
