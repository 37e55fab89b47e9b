//! Unit and property tests of sessions and tasks, driven only through
//! [`State::apply_batch`]: time enters through `leader_time_ms`, ids and fencing
//! tokens are command indexes.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::Index;

use super::scheduler::{task_limits, TaskLimits};
use super::sessions::{NewSession, Session, SessionId};
use super::tasks::{NewTask, Task, TaskError, TaskId, TaskState};
use super::*;
use crate::codec;
use crate::limits::Replicated;

// ----- helpers --------------------------------------------------------------------

/// A TTL or lease long enough never to run out in a test.
const FOREVER_MS: u64 = 1_000_000_000;

fn caps(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn batch(time_ms: u64, commands: Vec<Command>) -> Batch {
    Batch {
        leader_time_ms: time_ms,
        proposals: commands
            .into_iter()
            .map(|command| Proposal {
                guard: None,
                request_id: None,
                command,
            })
            .collect(),
    }
}

fn create_session(capabilities: &[&str], capacity: u32, ttl_ms: u64) -> Command {
    Command::SessionCreate(NewSession {
        name: "worker".into(),
        capabilities: caps(capabilities),
        capacity,
        ttl_ms,
        metadata_json: "{}".into(),
    })
}

fn keepalive(session_id: SessionId) -> Command {
    Command::SessionKeepalive { session_id }
}

fn end_session(session_id: SessionId) -> Command {
    Command::SessionEnd { session_id }
}

fn tick(renewals: &[(SessionId, u64)]) -> Command {
    Command::Tick {
        renewals: renewals.to_vec(),
    }
}

fn put(key: &str, session_id: Option<SessionId>) -> Command {
    Command::Kv(crate::sm::kv::KvCommand::Put {
        key: key.into(),
        value_json: "1".into(),
        if_version: None,
        session_id,
    })
}

fn delete(key: &str) -> Command {
    Command::Kv(crate::sm::kv::KvCommand::Delete {
        key: key.into(),
        if_version: None,
    })
}

/// A task with defaults (priority 0, 3 attempts, a 1 s lease); tests override fields
/// with `NewTask { field, ..task_spec(&[..]) }`.
fn task_spec(required: &[&str]) -> NewTask {
    NewTask {
        kind: "job".into(),
        payload_json: "{}".into(),
        required_capabilities: caps(required),
        priority: 0,
        max_attempts: 3,
        lease_ms: 1_000,
        not_before_ms: None,
        depends_on: Vec::new(),
        idempotency_key: None,
    }
}

fn submit(task: NewTask) -> Command {
    Command::TaskSubmit(task)
}

fn claim(session_id: SessionId) -> Command {
    Command::TaskClaim { session_id }
}

fn heartbeat(task_id: TaskId, fencing_token: u64, progress: Option<&str>) -> Command {
    Command::TaskHeartbeat {
        task_id,
        fencing_token,
        progress_json: progress.map(str::to_owned),
    }
}

fn complete(task_id: TaskId, fencing_token: u64, result: &str) -> Command {
    Command::TaskComplete {
        task_id,
        fencing_token,
        result_json: result.into(),
    }
}

fn fail(task_id: TaskId, fencing_token: u64, retryable: bool) -> Command {
    Command::TaskFail {
        task_id,
        fencing_token,
        error: "boom".into(),
        retryable,
    }
}

fn cancel(task_id: TaskId) -> Command {
    Command::TaskCancel { task_id }
}

fn retry(task_id: TaskId) -> Command {
    Command::TaskRetry { task_id }
}

fn updated(task_id: TaskId, state: TaskState) -> Outcome {
    Outcome::TaskUpdated { task_id, state }
}

fn error(attempt: u32, reason: &str, error: &str, at_ms: u64) -> TaskError {
    TaskError {
        attempt,
        reason: reason.into(),
        error: error.into(),
        at_ms,
    }
}

/// A state machine driven the way the log drives it: one batch at a time.
#[derive(Default)]
struct Machine {
    state: State,
}

impl Machine {
    fn apply(&mut self, time_ms: u64, commands: Vec<Command>) -> Vec<Outcome> {
        let response = self.state.apply_batch(&batch(time_ms, commands));
        response
            .results
            .into_iter()
            .map(|applied| applied.outcome)
            .collect()
    }

    fn apply_one(&mut self, time_ms: u64, command: Command) -> Outcome {
        self.apply(time_ms, vec![command]).remove(0)
    }

    fn session(
        &mut self,
        time_ms: u64,
        capabilities: &[&str],
        capacity: u32,
        ttl_ms: u64,
    ) -> SessionId {
        match self.apply_one(time_ms, create_session(capabilities, capacity, ttl_ms)) {
            Outcome::SessionCreated { session_id, .. } => session_id,
            other => panic!("session not created: {other:?}"),
        }
    }

    fn submit(&mut self, time_ms: u64, task: NewTask) -> TaskId {
        match self.apply_one(time_ms, submit(task)) {
            Outcome::TaskSubmitted { task_id, .. } => task_id,
            other => panic!("task not submitted: {other:?}"),
        }
    }

    /// Claims the session's next task and returns its fencing token.
    fn claim(&mut self, time_ms: u64, session_id: SessionId) -> u64 {
        match self.apply_one(time_ms, claim(session_id)) {
            Outcome::TaskClaimed { fencing_token, .. } => fencing_token,
            other => panic!("nothing claimed: {other:?}"),
        }
    }

    fn task(&self, id: TaskId) -> &Task {
        self.state.tasks.get(id).expect("task exists")
    }

    fn live_session(&self, id: SessionId) -> Option<&Session> {
        self.state.sessions.get(id)
    }

    fn assigned(&self, session_id: SessionId) -> Vec<TaskId> {
        self.state.tasks.assigned_to(session_id)
    }
}

// ----- sessions -------------------------------------------------------------------

#[test]
fn session_create_returns_its_command_index_and_expiry_at_time_plus_ttl() {
    let mut m = Machine::default();
    let outcomes = m.apply(
        1_000,
        vec![put("k", None), create_session(&["a", "b"], 2, 500)],
    );
    assert_eq!(
        outcomes[1],
        Outcome::SessionCreated {
            session_id: 2,
            expires_at_ms: 1_500
        }
    );
    let session = m.live_session(2).expect("live");
    assert_eq!(
        (
            session.created_at_ms,
            session.expires_at_ms,
            session.capacity,
            session.load
        ),
        (1_000, 1_500, 2, 0)
    );
    assert_eq!(session.capabilities, caps(&["a", "b"]));
}

#[test]
fn keepalive_extends_to_now_plus_ttl_and_never_shortens() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, 1_000);
    assert_eq!(
        m.apply_one(400, keepalive(id)),
        Outcome::SessionRenewed {
            expires_at_ms: 1_400
        }
    );
    // A renewal accepted earlier (at 200) would end sooner; it must not shorten.
    m.apply_one(500, tick(&[(id, 200)]));
    assert_eq!(m.live_session(id).unwrap().expires_at_ms, 1_400);
}

#[test]
fn tick_renews_from_the_accepted_time_and_ignores_unknown_sessions() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, 1_000);
    assert_eq!(
        m.apply_one(900, tick(&[(id, 600), (999, 600)])),
        Outcome::Ticked { renewed: 1 }
    );
    assert_eq!(
        m.live_session(id).unwrap().expires_at_ms,
        1_600,
        "from the accepted time, not the tick's 900"
    );
    assert!(m.live_session(999).is_none());
}

#[test]
fn a_session_expires_at_the_start_of_the_first_batch_whose_time_reaches_its_expiry() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, 1_000);
    m.apply(999, vec![]);
    assert!(m.live_session(id).is_some(), "not before its expiry");
    assert_eq!(
        m.apply_one(1_000, keepalive(id)),
        Outcome::SessionNotFound { session_id: id },
        "expired before the batch's keepalive applied"
    );
    assert!(m.live_session(id).is_none());
}

#[test]
fn a_renewal_accepted_before_expiry_keeps_the_session_even_if_its_tick_applies_after() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, 1_000);
    // The leader accepted a keepalive at 990 and answered "expires at 1_990"; its
    // ticker flushes it in the tick it proposes because the session is due at 1_000.
    assert_eq!(
        m.apply_one(1_000, tick(&[(id, 990)])),
        Outcome::Ticked { renewed: 1 }
    );
    assert_eq!(
        m.live_session(id).map(|session| session.expires_at_ms),
        Some(1_990)
    );
}

#[test]
fn ending_an_unknown_session_is_session_not_found() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, 1_000);
    assert_eq!(
        m.apply(1, vec![end_session(id), end_session(id), end_session(42)]),
        vec![
            Outcome::SessionEnded,
            Outcome::SessionNotFound { session_id: id },
            Outcome::SessionNotFound { session_id: 42 },
        ]
    );
}

// ----- ephemeral keys -------------------------------------------------------------

#[test]
fn a_put_with_a_session_binds_the_key_and_ending_the_session_deletes_it() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, FOREVER_MS);
    m.apply(1, vec![put("lock", Some(id)), put("plain", None)]);
    assert_eq!(m.state.kv["lock"].session_id, Some(id));
    assert_eq!(m.live_session(id).unwrap().ephemeral_keys, caps(&["lock"]));
    m.apply_one(2, end_session(id));
    assert!(!m.state.kv.contains_key("lock"));
    assert!(m.state.kv.contains_key("plain"));
}

#[test]
fn an_expiring_session_deletes_its_ephemeral_keys() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, 1_000);
    m.apply_one(1, put("lock", Some(id)));
    m.apply(999, vec![]);
    assert!(m.state.kv.contains_key("lock"));
    m.apply(1_000, vec![]);
    assert!(!m.state.kv.contains_key("lock"));
}

#[test]
fn overwriting_an_ephemeral_key_without_a_session_unbinds_it_so_it_survives_the_session() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, FOREVER_MS);
    m.apply(1, vec![put("lock", Some(id)), put("lock", None)]);
    assert_eq!(m.state.kv["lock"].session_id, None);
    assert!(m.live_session(id).unwrap().ephemeral_keys.is_empty());
    m.apply_one(2, end_session(id));
    assert!(m.state.kv.contains_key("lock"));
}

#[test]
fn rebinding_an_ephemeral_key_to_another_session_moves_it() {
    let mut m = Machine::default();
    let first = m.session(0, &[], 1, FOREVER_MS);
    let second = m.session(0, &[], 1, FOREVER_MS);
    m.apply(1, vec![put("lock", Some(first)), put("lock", Some(second))]);
    assert!(m.live_session(first).unwrap().ephemeral_keys.is_empty());
    assert_eq!(
        m.live_session(second).unwrap().ephemeral_keys,
        caps(&["lock"])
    );
    m.apply_one(2, end_session(first));
    assert_eq!(m.state.kv["lock"].session_id, Some(second));
    m.apply_one(3, end_session(second));
    assert!(m.state.kv.is_empty());
}

#[test]
fn a_put_for_an_unknown_session_is_refused_and_writes_nothing() {
    let mut m = Machine::default();
    assert_eq!(
        m.apply_one(0, put("lock", Some(7))),
        Outcome::SessionNotFound { session_id: 7 }
    );
    assert!(m.state.kv.is_empty());
}

#[test]
fn deleting_an_ephemeral_key_removes_it_from_the_sessions_set() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, FOREVER_MS);
    m.apply(1, vec![put("lock", Some(id)), delete("lock")]);
    assert!(m.live_session(id).unwrap().ephemeral_keys.is_empty());
    // A later plain write of the same key is not the session's to delete.
    m.apply(2, vec![put("lock", None), end_session(id)]);
    assert!(m.state.kv.contains_key("lock"));
}

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
    let mut m = Machine::default();
    let worker = m.session(0, &[], 1, FOREVER_MS);
    let first = m.submit(1, task_spec(&[]));
    let second = m.submit(1, task_spec(&[]));
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
        Outcome::TaskClaimed {
            task_id: task,
            // Assigned during its own submit command.
            fencing_token: task,
            lease_expires_at_ms: 8_000,
        }
    );
    assert!(m.task(task).claimed);
}

#[test]
fn claim_with_nothing_assigned_is_no_task_assigned() {
    let mut m = Machine::default();
    let worker = m.session(0, &[], 1, FOREVER_MS);
    assert_eq!(m.apply_one(1, claim(worker)), Outcome::NoTaskAssigned);
}

#[test]
fn claim_for_an_unknown_session_is_session_not_found() {
    let mut m = Machine::default();
    assert_eq!(
        m.apply_one(1, claim(5)),
        Outcome::SessionNotFound { session_id: 5 }
    );
}

#[test]
fn a_claimed_task_is_not_returned_by_the_next_claim() {
    let mut m = Machine::default();
    let worker = m.session(0, &[], 2, FOREVER_MS);
    let first = m.submit(1, task_spec(&[]));
    let second = m.submit(1, task_spec(&[]));
    let claimed: Vec<Option<TaskId>> = m
        .apply(2, vec![claim(worker), claim(worker), claim(worker)])
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::TaskClaimed { task_id, .. } => Some(task_id),
            _ => None,
        })
        .collect();
    assert_eq!(claimed, vec![Some(first), Some(second), None]);
}

// ----- heartbeat, complete, fail with fencing tokens -------------------------------

#[test]
fn heartbeat_extends_the_lease_and_stores_progress() {
    let mut m = Machine::default();
    let worker = m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
    let token = m.claim(0, worker);
    assert_eq!(
        m.apply_one(600, heartbeat(task, token, Some("{\"pct\":50}"))),
        Outcome::TaskLeaseExtended {
            lease_expires_at_ms: 1_600,
            cancel_requested: false
        }
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
    let mut m = Machine::default();
    let worker = m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
    let token = m.claim(0, worker);
    assert_eq!(
        m.apply_one(500, heartbeat(task, token + 100, Some("{}"))),
        Outcome::StaleFencingToken { current: token }
    );
    assert_eq!(m.task(task).progress_json, None);
    assert_eq!(m.task(task).lease_expires_at_ms, 1_000);
}

#[test]
fn complete_with_the_current_token_succeeds_and_stores_the_result() {
    let mut m = Machine::default();
    let worker = m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
    let token = m.claim(0, worker);
    assert_eq!(
        m.apply_one(10, complete(task, token, "{\"ok\":true}")),
        updated(task, TaskState::Succeeded)
    );
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
            Outcome::StaleFencingToken { current: new },
            Outcome::StaleFencingToken { current: new },
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
        Outcome::StaleFencingToken {
            current: second_token
        },
        "the ended session's token {first_token} must not complete the new holder's {second_token}"
    );
}

// ----- leases and session ends ----------------------------------------------------

#[test]
fn an_expired_lease_requeues_the_task_with_the_attempt_counted_and_a_lease_expired_error() {
    let mut m = Machine::default();
    let worker = m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
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
    let mut m = Machine::default();
    let worker = m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
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
    let mut m = Machine::default();
    let worker = m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
    m.apply_one(1, fail(task, task, false));
    assert_eq!(m.task(task).state, TaskState::Dead);
    let response = m.state.apply_batch(&batch(2, vec![retry(task)]));
    assert!(matches!(
        response.results[0].outcome,
        Outcome::TaskUpdated { task_id, .. } if task_id == task
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
        Outcome::WrongState { .. }
    ));
    assert_eq!(
        m.apply_one(1, retry(99)),
        Outcome::TaskNotFound { task_id: 99 }
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
    let mut m = Machine::default();
    let worker = m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
    // The worker goes too, so nothing takes the task once it is queued.
    m.apply(500, vec![fail(task, task, true), end_session(worker)]);
    assert_eq!(
        (m.task(task).state, m.task(task).not_before_ms),
        (TaskState::Failed, 1_500)
    );
    m.apply(1_499, vec![]);
    assert_eq!(m.task(task).state, TaskState::Failed);
    m.apply(1_500, vec![]);
    assert_eq!(m.task(task).state, TaskState::Queued);
}

#[test]
fn a_non_retryable_failure_is_dead_at_once() {
    let mut m = Machine::default();
    m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
    assert_eq!(
        m.apply_one(1, fail(task, task, false)),
        updated(task, TaskState::Dead)
    );
    let dead = m.task(task);
    assert_eq!((dead.attempts, dead.spec.max_attempts), (1, 3));
    assert_eq!(dead.errors, vec![error(1, "failed", "boom", 1)]);
}

// ----- dependencies and delays ----------------------------------------------------

#[test]
fn a_task_is_pending_until_every_dependency_succeeded() {
    let mut m = Machine::default();
    let worker = m.session(0, &[], 2, FOREVER_MS);
    let first = m.submit(0, task_spec(&[]));
    let second = m.submit(0, task_spec(&[]));
    let outcome = m.apply_one(
        0,
        submit(NewTask {
            depends_on: vec![first, second],
            ..task_spec(&[])
        }),
    );
    let Outcome::TaskSubmitted {
        task_id: dependent,
        state: TaskState::Pending,
        existing: false,
    } = outcome
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
    let mut m = Machine::default();
    m.session(0, &[], 1, FOREVER_MS);
    let root = m.submit(0, task_spec(&[]));
    let child = m.submit(
        0,
        NewTask {
            depends_on: vec![root],
            ..task_spec(&[])
        },
    );
    let grandchild = m.submit(
        0,
        NewTask {
            depends_on: vec![child],
            ..task_spec(&[])
        },
    );
    m.apply_one(1, fail(root, root, false));
    assert_eq!(m.task(child).state, TaskState::Cancelled);
    assert_eq!(m.task(grandchild).state, TaskState::Cancelled);
}

#[test]
fn a_cancelled_dependency_cancels_its_dependents() {
    let mut m = Machine::default();
    let root = m.submit(0, task_spec(&[]));
    let child = m.submit(
        0,
        NewTask {
            depends_on: vec![root],
            ..task_spec(&[])
        },
    );
    let grandchild = m.submit(
        0,
        NewTask {
            depends_on: vec![child],
            ..task_spec(&[])
        },
    );
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
        Outcome::TaskNotFound { task_id: 77 }
    );
    assert!(m.state.tasks.is_empty());
    assert_eq!(m.state.tasks.by_idempotency_key("once"), None);
}

#[test]
fn submit_with_a_dependency_listed_twice_is_invalid() {
    let mut m = Machine::default();
    let root = m.submit(0, task_spec(&[]));
    let outcome = m.apply_one(
        0,
        submit(NewTask {
            depends_on: vec![root, root],
            ..task_spec(&[])
        }),
    );
    assert!(
        matches!(outcome, Outcome::InvalidCommand { .. }),
        "{outcome:?}"
    );
    assert_eq!(m.state.tasks.len(), 1);
    assert!(m.task(root).dependents.is_empty());
}

#[test]
fn a_task_submitted_after_its_dependency_died_is_cancelled_at_once() {
    let mut m = Machine::default();
    m.session(0, &[], 1, FOREVER_MS);
    let root = m.submit(0, task_spec(&[]));
    m.apply_one(1, fail(root, root, false));
    let outcome = m.apply_one(
        2,
        submit(NewTask {
            depends_on: vec![root],
            ..task_spec(&[])
        }),
    );
    assert!(matches!(
        outcome,
        Outcome::TaskSubmitted {
            state: TaskState::Cancelled,
            existing: false,
            ..
        }
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
    assert_eq!(
        (m.task(task).state, m.task(task).not_before_ms),
        (TaskState::Pending, 7_000)
    );
    m.apply(6_999, vec![]);
    assert_eq!(m.task(task).state, TaskState::Pending);
    m.apply(7_000, vec![]);
    assert_eq!(m.task(task).state, TaskState::Queued);
}

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
    let mut m = Machine::default();
    let worker = m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
    let token = m.claim(0, worker);
    assert_eq!(
        m.apply_one(1, cancel(task)),
        updated(task, TaskState::Cancelled)
    );
    assert_eq!(m.live_session(worker).unwrap().load, 0);
    assert!(m.assigned(worker).is_empty());
    assert_eq!(
        m.apply_one(2, heartbeat(task, token, None)),
        Outcome::TaskLeaseExtended {
            lease_expires_at_ms: 0,
            cancel_requested: true
        }
    );
}

#[test]
fn cancelling_a_terminal_task_is_wrong_state() {
    let mut m = Machine::default();
    m.session(0, &[], 1, FOREVER_MS);
    let done = m.submit(0, task_spec(&[]));
    m.apply_one(1, complete(done, done, "null"));
    let dropped = m.submit(1, task_spec(&[]));
    m.apply_one(2, cancel(dropped));
    for task in [done, dropped] {
        let outcome = m.apply_one(3, cancel(task));
        assert!(matches!(outcome, Outcome::WrongState { .. }), "{outcome:?}");
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
            Outcome::TaskSubmitted {
                task_id: 1,
                state: TaskState::Queued,
                existing: false
            },
            Outcome::TaskSubmitted {
                task_id: 1,
                state: TaskState::Queued,
                existing: true
            },
        ]
    );
    assert_eq!(m.state.tasks.len(), 1);
    assert_eq!(m.task(1).spec.kind, "first");
}

#[test]
fn next_due_reports_the_earliest_session_expiry_or_task_timer() {
    let mut m = Machine::default();
    assert_eq!(m.state.next_due_ms(), None);
    m.session(0, &[], 1, 10_000);
    assert_eq!(m.state.next_due_ms(), Some(10_000), "session expiry");
    m.submit(
        0,
        NewTask {
            lease_ms: 3_000,
            ..task_spec(&[])
        },
    );
    assert_eq!(m.state.next_due_ms(), Some(3_000), "lease");
    m.submit(
        0,
        NewTask {
            not_before_ms: Some(1_500),
            ..task_spec(&["gpu"])
        },
    );
    assert_eq!(m.state.next_due_ms(), Some(1_500), "not_before");
    m.apply(1_500, vec![]);
    assert_eq!(m.state.next_due_ms(), Some(3_000));
}

// ----- golden scenario ------------------------------------------------------------

/// `sessions: id load/capacity | tasks: id state[@session#token] | kv: key[@session]`.
fn summary(state: &State) -> String {
    let sessions: Vec<String> = state
        .sessions
        .iter()
        .map(|s| format!("{} {}/{}", s.id, s.load, s.capacity))
        .collect();
    let tasks: Vec<String> = state
        .tasks
        .range_from(None)
        .map(|t| match t.session_id {
            Some(s) if t.state == TaskState::Assigned => {
                format!("{} assigned@{s}#{}", t.id, t.fencing_token)
            }
            _ => format!("{} {}", t.id, t.state.name()),
        })
        .collect();
    let kv: Vec<String> = state
        .kv
        .iter()
        .map(|(key, entry)| match entry.session_id {
            Some(s) => format!("{key}@{s}"),
            None => key.clone(),
        })
        .collect();
    format!(
        "sessions: {} | tasks: {} | kv: {}",
        sessions.join(", "),
        tasks.join(", "),
        kv.join(", ")
    )
}

#[test]
fn golden_scenario_outcomes_match_the_table() {
    use Outcome::*;
    use TaskState::*;
    let job = |required: &[&str], lease_ms, depends_on: Vec<TaskId>| {
        submit(NewTask {
            lease_ms,
            depends_on,
            ..task_spec(required)
        })
    };
    let nightly = |kind: &str| {
        submit(NewTask {
            kind: kind.into(),
            lease_ms: 10_000,
            idempotency_key: Some("nightly".into()),
            ..task_spec(&[])
        })
    };
    let submitted = |task_id, state, existing| TaskSubmitted {
        task_id,
        state,
        existing,
    };
    let claimed = |task_id, fencing_token, lease_expires_at_ms| TaskClaimed {
        task_id,
        fencing_token,
        lease_expires_at_ms,
    };
    let wrong = |message: &str| WrongState {
        message: message.into(),
    };
    // (time, commands, outcomes, summary after the batch); command indexes in comments.
    let table: Vec<(u64, Vec<Command>, Vec<Outcome>, &str)> = vec![
        (
            1_000,
            // 1, 2
            vec![
                create_session(&["cpu"], 1, 5_000),
                create_session(&["cpu", "gpu"], 2, 5_000),
            ],
            vec![
                SessionCreated {
                    session_id: 1,
                    expires_at_ms: 6_000,
                },
                SessionCreated {
                    session_id: 2,
                    expires_at_ms: 6_000,
                },
            ],
            "sessions: 1 0/1, 2 0/2 | tasks:  | kv: ",
        ),
        (
            1_100,
            // 3 render (gpu, 2 attempts), 4 build (cpu), 5 report after both
            vec![
                submit(NewTask {
                    kind: "render".into(),
                    lease_ms: 2_000,
                    max_attempts: 2,
                    ..task_spec(&["gpu"])
                }),
                job(&["cpu"], 2_000, vec![]),
                job(&[], 10_000, vec![3, 4]),
            ],
            vec![
                submitted(3, Assigned, false),
                submitted(4, Assigned, false),
                submitted(5, Pending, false),
            ],
            "sessions: 1 1/1, 2 1/2 | tasks: 3 assigned@2#3, 4 assigned@1#4, 5 pending | kv: ",
        ),
        (
            1_200,
            // 6, 7
            vec![claim(1), claim(2)],
            vec![claimed(4, 4, 3_200), claimed(3, 3, 3_200)],
            "sessions: 1 1/1, 2 1/2 | tasks: 3 assigned@2#3, 4 assigned@1#4, 5 pending | kv: ",
        ),
        (
            1_500,
            // 8, 9
            vec![
                heartbeat(3, 3, Some("{\"frame\":10}")),
                complete(4, 4, "\"built\""),
            ],
            vec![
                TaskLeaseExtended {
                    lease_expires_at_ms: 3_500,
                    cancel_requested: false,
                },
                updated(4, Succeeded),
            ],
            "sessions: 1 0/1, 2 1/2 | tasks: 3 assigned@2#3, 4 succeeded, 5 pending | kv: ",
        ),
        (
            1_600,
            // 10, 11
            vec![put("leader", Some(1)), complete(4, 4, "\"again\"")],
            vec![KvWritten { version: 10 }, wrong("task 4 is succeeded")],
            "sessions: 1 0/1, 2 1/2 | tasks: 3 assigned@2#3, 4 succeeded, 5 pending | kv: leader@1",
        ),
        (
            2_000,
            // 12: session 1 now expires at 6_900, session 2 still at 6_000
            vec![tick(&[(1, 1_900)])],
            vec![Ticked { renewed: 1 }],
            "sessions: 1 0/1, 2 1/2 | tasks: 3 assigned@2#3, 4 succeeded, 5 pending | kv: leader@1",
        ),
        (
            3_500,
            // render's lease ran out: the time step takes index 13 of its own and
            // reassigns under it, before the fail (14) runs
            vec![fail(3, 3, true)],
            vec![StaleFencingToken { current: 13 }],
            "sessions: 1 0/1, 2 1/2 | tasks: 3 assigned@2#13, 4 succeeded, 5 pending | kv: leader@1",
        ),
        (
            3_600,
            // 15, 16: the second attempt was the last; report is cancelled with it
            vec![claim(2), fail(3, 13, true)],
            vec![claimed(3, 13, 5_600), updated(3, Dead)],
            "sessions: 1 0/1, 2 0/2 | tasks: 3 dead, 4 succeeded, 5 cancelled | kv: leader@1",
        ),
        (
            3_700,
            // 17, 18
            vec![retry(3), job(&[], 10_000, vec![3])],
            vec![updated(3, Assigned), submitted(18, Pending, false)],
            "sessions: 1 0/1, 2 1/2 | tasks: 3 assigned@2#17, 4 succeeded, 5 cancelled, 18 pending | kv: leader@1",
        ),
        (
            3_800,
            // 19, 20: 18 is ready and goes to session 1 (tie on load, lower id)
            vec![claim(2), complete(3, 17, "\"rendered\"")],
            vec![claimed(3, 17, 5_800), updated(3, Succeeded)],
            "sessions: 1 1/1, 2 0/2 | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 assigned@1#20 | kv: leader@1",
        ),
        (
            4_000,
            // 21, 22
            vec![cancel(5), nightly("nightly")],
            vec![
                wrong("task 5 is already cancelled"),
                submitted(22, Assigned, false),
            ],
            "sessions: 1 1/1, 2 1/2 | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 assigned@1#20, 22 assigned@2#22 | kv: leader@1",
        ),
        (
            4_100,
            // 23
            vec![nightly("nightly-again")],
            vec![submitted(22, Assigned, true)],
            "sessions: 1 1/1, 2 1/2 | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 assigned@1#20, 22 assigned@2#22 | kv: leader@1",
        ),
        (
            6_000,
            // session 2 expired first (time step 24); 22 waits (session 1 is full). 25
            vec![keepalive(2)],
            vec![SessionNotFound { session_id: 2 }],
            "sessions: 1 1/1 | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 assigned@1#20, 22 queued | kv: leader@1",
        ),
        (
            6_500,
            // 26, 27
            vec![complete(18, 20, "\"published\""), keepalive(1)],
            vec![
                updated(18, Succeeded),
                SessionRenewed {
                    expires_at_ms: 11_500,
                },
            ],
            "sessions: 1 1/1 | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 succeeded, 22 assigned@1#26 | kv: leader@1",
        ),
        (
            7_000,
            // 28, 29
            vec![end_session(1), put("leader", Some(1))],
            vec![SessionEnded, SessionNotFound { session_id: 1 }],
            "sessions:  | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 succeeded, 22 queued | kv: ",
        ),
        (
            7_100,
            // 30, 31
            vec![nightly("nightly-3"), cancel(22)],
            vec![submitted(22, Queued, true), updated(22, Cancelled)],
            "sessions:  | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 succeeded, 22 cancelled | kv: ",
        ),
    ];
    let mut m = Machine::default();
    for (step, (time, commands, expected, after)) in table.into_iter().enumerate() {
        let step = step + 1;
        assert_eq!(
            m.apply(time, commands),
            expected,
            "step {step} at {time}: outcomes"
        );
        assert_eq!(summary(&m.state), after, "step {step} at {time}: state");
    }
    assert_eq!(m.state.last_command_index, 31);
    assert_eq!(
        m.task(22).errors,
        vec![
            error(1, "session_ended", "", 6_000),
            error(2, "session_ended", "", 7_000),
        ]
    );
}

// ----- property test --------------------------------------------------------------

const CAPABILITIES: [&str; 4] = ["a", "b", "c", "d"];

fn capability_subset(mask: u8) -> Vec<&'static str> {
    CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// A session or task: a live session or assigned task, any one created so far, or
/// an id that never existed.
#[derive(Debug, Clone, Copy)]
enum Target {
    Active(Index),
    Known(Index),
    Unknown(u64),
}

#[derive(Debug, Clone, Copy)]
enum Token {
    /// The task's token when the batch is built.
    Current,
    /// One the task had before (or the current one if it never had another).
    Old(Index),
    Any(u64),
}

#[derive(Debug, Clone)]
enum Op {
    CreateSession {
        capabilities: u8,
        capacity: u32,
        ttl_ms: u64,
    },
    Submit {
        required: u8,
        priority: i32,
        max_attempts: u32,
        lease_ms: u64,
        depends_on: Option<Index>,
    },
    Claim(Target),
    Heartbeat(Target, Token),
    Complete(Target, Token),
    Fail(Target, Token, bool),
    Cancel(Target),
    Retry(Target),
    EndSession(Target),
    /// An empty batch this much later.
    Advance(u64),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        4 => any::<Index>().prop_map(Target::Active),
        2 => any::<Index>().prop_map(Target::Known),
        1 => (900_000u64..900_004).prop_map(Target::Unknown),
    ]
}

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![
        3 => Just(Token::Current),
        2 => any::<Index>().prop_map(Token::Old),
        1 => (0u64..200).prop_map(Token::Any),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..8, 0u32..=3, 500u64..=3_000).prop_map(|(capabilities, capacity, ttl_ms)| {
            Op::CreateSession { capabilities, capacity, ttl_ms }
        }),
        3 => (0u8..8, -1i32..=2, 1u32..=3, 200u64..=2_000, proptest::option::of(any::<Index>()))
            .prop_map(|(required, priority, max_attempts, lease_ms, depends_on)| Op::Submit {
                required,
                priority,
                max_attempts,
                lease_ms,
                depends_on,
            }),
        2 => target().prop_map(Op::Claim),
        1 => (target(), token()).prop_map(|(task, token)| Op::Heartbeat(task, token)),
        2 => (target(), token()).prop_map(|(task, token)| Op::Complete(task, token)),
        2 => (target(), token(), any::<bool>())
            .prop_map(|(task, token, retryable)| Op::Fail(task, token, retryable)),
        1 => target().prop_map(Op::Cancel),
        1 => target().prop_map(Op::Retry),
        1 => target().prop_map(Op::EndSession),
        2 => (0u64..=2_000).prop_map(Op::Advance),
    ]
}

/// Runs generated operations against the state machine, checking the invariants after
/// every command. `whole` applies each batch as the log does; `stepwise` applies the
/// same batch as its time step and then one proposal at a time, which is equivalent
/// here (no command makes anything due at once) and lets each command be observed.
struct Run {
    whole: State,
    stepwise: State,
    /// The same batches applied with the full-scan reference assignment.
    reference: State,
    time_ms: u64,
    pending: Vec<Proposal>,
    batches: Vec<Batch>,
    /// Every session id ever created, live or not.
    sessions: Vec<SessionId>,
    /// Every task id accepted by a submit.
    tasks: Vec<TaskId>,
    /// Every fencing token each task has had.
    tokens: BTreeMap<TaskId, BTreeSet<u64>>,
    /// (task, token) of each successful complete.
    completed: BTreeMap<TaskId, u64>,
}

impl Run {
    fn new() -> Self {
        Self {
            whole: State::default(),
            stepwise: State::default(),
            reference: State::default(),
            time_ms: 1_000,
            pending: Vec::new(),
            batches: Vec::new(),
            sessions: Vec::new(),
            tasks: Vec::new(),
            tokens: BTreeMap::new(),
            completed: BTreeMap::new(),
        }
    }

    fn execute(ops: &[(Op, bool)]) {
        let mut run = Self::new();
        for (op, ends_batch) in ops {
            if let Op::Advance(ms) = op {
                run.flush();
                run.time_ms += ms;
                run.apply(Vec::new());
                continue;
            }
            let command = run.resolve(op);
            run.pending.push(Proposal {
                guard: None,
                request_id: None,
                command,
            });
            if *ends_batch || run.pending.len() == 4 {
                run.flush();
            }
        }
        run.flush();
        run.check_determinism();
    }

    /// Resolves `target` among `known` ids, of which `active` are live or assigned.
    fn pick(known: &[u64], active: &[u64], target: Target) -> u64 {
        match target {
            Target::Active(index) if !active.is_empty() => active[index.index(active.len())],
            Target::Active(index) | Target::Known(index) if !known.is_empty() => {
                known[index.index(known.len())]
            }
            Target::Active(_) | Target::Known(_) => 900_000,
            Target::Unknown(id) => id,
        }
    }

    fn token_for(&self, task_id: TaskId, choice: Token) -> u64 {
        let current = self.whole.tasks.get(task_id).map_or(0, |t| t.fencing_token);
        match choice {
            Token::Current => current,
            Token::Old(index) => {
                let old: Vec<u64> = self
                    .tokens
                    .get(&task_id)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|token| *token != current)
                    .collect();
                if old.is_empty() {
                    current
                } else {
                    old[index.index(old.len())]
                }
            }
            Token::Any(token) => token,
        }
    }

    fn resolve(&self, op: &Op) -> Command {
        // An active task is one the command can act on.
        let task = |target, active: fn(TaskState) -> bool| {
            let ids: Vec<TaskId> = self
                .whole
                .tasks
                .range_from(None)
                .filter(|t| active(t.state))
                .map(|t| t.id)
                .collect();
            Self::pick(&self.tasks, &ids, target)
        };
        let assigned = |target| task(target, |s| s == TaskState::Assigned);
        let live: Vec<SessionId> = self.whole.sessions.iter().map(|s| s.id).collect();
        let session = |target| Self::pick(&self.sessions, &live, target);
        match *op {
            Op::CreateSession {
                capabilities,
                capacity,
                ttl_ms,
            } => create_session(&capability_subset(capabilities), capacity, ttl_ms),
            Op::Submit {
                required,
                priority,
                max_attempts,
                lease_ms,
                depends_on,
            } => submit(NewTask {
                priority,
                max_attempts,
                lease_ms,
                depends_on: depends_on
                    .filter(|_| !self.tasks.is_empty())
                    .map(|index| Self::pick(&self.tasks, &[], Target::Known(index)))
                    .into_iter()
                    .collect(),
                ..task_spec(&capability_subset(required))
            }),
            Op::Claim(target) => claim(session(target)),
            Op::Heartbeat(target, choice) => {
                let id = assigned(target);
                heartbeat(id, self.token_for(id, choice), Some("{}"))
            }
            Op::Complete(target, choice) => {
                let id = assigned(target);
                complete(id, self.token_for(id, choice), "null")
            }
            Op::Fail(target, choice, retryable) => {
                let id = assigned(target);
                fail(id, self.token_for(id, choice), retryable)
            }
            Op::Cancel(target) => cancel(task(target, |s| !s.is_terminal())),
            Op::Retry(target) => retry(task(target, |s| s == TaskState::Dead)),
            Op::EndSession(target) => end_session(session(target)),
            Op::Advance(_) => unreachable!("advancing time is an empty batch"),
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let proposals = std::mem::take(&mut self.pending);
            self.apply(proposals);
        }
    }

    fn apply(&mut self, proposals: Vec<Proposal>) {
        let time_ms = self.time_ms;
        let single = |proposals| Batch {
            leader_time_ms: time_ms,
            proposals,
        };
        let batch = single(proposals);
        let response = self.whole.apply_batch(&batch);
        let expected = scheduler::reference::with(|| self.reference.apply_batch(&batch));
        assert_eq!(
            response, expected,
            "indexed assignment = full-scan reference"
        );
        assert!(
            self.whole == self.reference,
            "indexed assignment leaves the state the full scan does"
        );

        let before = self.stepwise.clone();
        self.stepwise.apply_batch(&single(Vec::new()));
        self.check(&before, None);
        for (proposal, expected) in batch.proposals.iter().zip(&response.results) {
            let before = self.stepwise.clone();
            let applied = self
                .stepwise
                .apply_batch(&single(vec![proposal.clone()]))
                .results
                .remove(0);
            assert_eq!(&applied, expected, "one at a time, {proposal:?}");
            self.record(&applied.outcome);
            self.check(&before, Some((&proposal.command, &applied.outcome)));
        }
        assert!(
            self.whole == self.stepwise,
            "a batch applies as its proposals one at a time"
        );
        self.batches.push(batch);
    }

    fn record(&mut self, outcome: &Outcome) {
        match *outcome {
            Outcome::SessionCreated { session_id, .. } => self.sessions.push(session_id),
            Outcome::TaskSubmitted {
                task_id,
                existing: false,
                ..
            } => self.tasks.push(task_id),
            _ => {}
        }
    }

    /// Checks every invariant across one step (a time step when `command` is `None`).
    fn check(&mut self, before: &State, command: Option<(&Command, &Outcome)>) {
        let after = &self.stepwise;
        after.tasks.assert_indexes_consistent();
        after.sessions.assert_indexes_consistent();
        let limits = TaskLimits::current();
        // (1) No task is lost: every stored task was accepted, and an accepted task
        // stays until it is removed (checked below: only a terminal one, after its
        // retention or evicted to make room).
        let stored = self
            .tasks
            .iter()
            .filter(|id| after.tasks.get(**id).is_some())
            .count();
        assert_eq!(after.tasks.len(), stored, "(1) task count");
        assert!(
            after.tasks.len() <= limits.max_tasks,
            "(1) at most max_tasks"
        );
        if command.is_none() {
            // A time step removes every terminal task whose retention has passed
            // (these runs never have more than a GC batch of them).
            assert!(
                after.tasks.oldest_terminal().is_none_or(|(at, _)| at
                    .saturating_add(limits.retention_ms)
                    > after.cluster_time_ms),
                "an expired terminal task is left"
            );
        }
        let mut holders: BTreeMap<TaskId, Vec<SessionId>> = BTreeMap::new();
        for &session in &self.sessions {
            for task in after.tasks.assigned_to(session) {
                holders.entry(task).or_default().push(session);
            }
        }
        for &id in &self.tasks {
            let Some(task) = after.tasks.get(id) else {
                continue;
            };
            assert!(task.attempts <= task.spec.max_attempts, "attempts {task:?}");
            if task.state == TaskState::Assigned {
                // (2) Held by one live session that lists it; (6) which can run it.
                let session_id = task.session_id.expect("(2) an assigned task has a session");
                let session = after
                    .sessions
                    .get(session_id)
                    .expect("(2) its session is live");
                assert_eq!(holders.get(&id), Some(&vec![session_id]), "(2) {task:?}");
                assert!(
                    session.has_capabilities(&task.spec.required_capabilities),
                    "(6) {task:?} on {session:?}"
                );
            } else {
                assert_eq!(holders.get(&id), None, "(2) unassigned but held: {task:?}");
            }
            // Dependencies: a task runs only after all succeeded, and one that died or
            // was cancelled cancels it. A removed dependency was terminal, and its end
            // already resolved this task, so it is skipped.
            let dependencies: Vec<TaskState> = task
                .spec
                .depends_on
                .iter()
                .filter_map(|d| after.tasks.get(*d))
                .map(|d| d.state)
                .collect();
            if dependencies
                .iter()
                .any(|s| matches!(s, TaskState::Dead | TaskState::Cancelled))
            {
                assert_eq!(
                    task.state,
                    TaskState::Cancelled,
                    "dependency gone: {task:?}"
                );
            }
            if !matches!(task.state, TaskState::Pending | TaskState::Cancelled) {
                assert!(
                    dependencies.iter().all(|s| *s == TaskState::Succeeded),
                    "ran before its dependencies: {task:?}"
                );
            }
            if task.state == TaskState::Failed {
                assert!(
                    task.attempts < task.spec.max_attempts,
                    "failed (to retry) with no attempt left: {task:?}"
                );
            }
            if task.state == TaskState::Queued {
                // Work is never left queued while a capable session has room.
                assert!(
                    !after
                        .sessions
                        .iter()
                        .any(|s| s.has_room()
                            && s.has_capabilities(&task.spec.required_capabilities)),
                    "queued while a session could run it: {task:?}"
                );
            }
        }
        // (3) Load is the number of assigned tasks and within capacity.
        for session in after.sessions.iter() {
            let held = after.tasks.assigned_to(session.id).len();
            assert_eq!(session.load as usize, held, "(3) {session:?}");
            assert!(session.load <= session.capacity, "(3) {session:?}");
        }
        let mut evicted = 0;
        for old in before.tasks.range_from(None) {
            let Some(new) = after.tasks.get(old.id) else {
                // (1) Only a terminal task is removed: by a time step once its
                // retention passed, or evicted (the oldest terminal one) by a submit
                // into a full store.
                assert!(old.state.is_terminal(), "(1) {old:?} removed while live");
                match command {
                    None => assert!(
                        old.updated_at_ms.saturating_add(limits.retention_ms)
                            <= after.cluster_time_ms,
                        "(1) {old:?} removed before its retention passed"
                    ),
                    Some((Command::TaskSubmit(new), outcome)) => {
                        assert!(
                            matches!(
                                outcome,
                                Outcome::TaskSubmitted {
                                    existing: false,
                                    ..
                                }
                            ),
                            "(1) {old:?} evicted by {outcome:?}"
                        );
                        assert!(before.tasks.len() >= limits.max_tasks, "(1) evicted early");
                        let except = new.depends_on.iter().copied().collect();
                        assert_eq!(
                            before.tasks.oldest_terminal_except(&except),
                            Some(old.id),
                            "(1) the oldest terminal task is evicted"
                        );
                        evicted += 1;
                    }
                    Some(other) => panic!("(1) {old:?} removed by {other:?}"),
                }
                continue;
            };
            // (5) Fencing tokens never decrease.
            assert!(
                new.fencing_token >= old.fencing_token,
                "(5) {old:?} → {new:?}"
            );
            // (7) Terminal states stay, except a dead task that is retried.
            if old.state.is_terminal() && new.state != old.state {
                let retried = matches!(command, Some((Command::TaskRetry { task_id }, _)) if *task_id == old.id);
                assert!(
                    old.state == TaskState::Dead
                        && retried
                        && matches!(
                            new.state,
                            TaskState::Queued | TaskState::Pending | TaskState::Assigned
                        ),
                    "(7) {:?} → {:?} by {command:?}",
                    old.state,
                    new.state
                );
            }
            // (4) Success only through a complete with the current token, once.
            if new.state == TaskState::Succeeded && old.state != TaskState::Succeeded {
                let Some((
                    Command::TaskComplete {
                        task_id,
                        fencing_token,
                        ..
                    },
                    outcome,
                )) = command
                else {
                    panic!("(4) {} succeeded without a complete: {command:?}", old.id);
                };
                assert_eq!(
                    (*task_id, *fencing_token, old.state),
                    (old.id, old.fencing_token, TaskState::Assigned),
                    "(4)"
                );
                assert_eq!(*outcome, updated(old.id, TaskState::Succeeded), "(4)");
                assert_eq!(
                    self.completed.insert(old.id, *fencing_token),
                    None,
                    "(4) succeeded twice"
                );
            }
        }
        assert!(evicted <= 1, "(1) one eviction per submit");
        if let Some((command, outcome)) = command {
            // A stale token is refused, whatever the command.
            if let Command::TaskHeartbeat {
                task_id,
                fencing_token,
                ..
            }
            | Command::TaskComplete {
                task_id,
                fencing_token,
                ..
            }
            | Command::TaskFail {
                task_id,
                fencing_token,
                ..
            } = command
            {
                if let Some(task) = before.tasks.get(*task_id) {
                    if task.fencing_token != *fencing_token {
                        assert_eq!(
                            *outcome,
                            Outcome::StaleFencingToken {
                                current: task.fencing_token
                            },
                            "{command:?}"
                        );
                    }
                }
            }
            // A refusal changes nothing but the command index.
            let refused = matches!(
                outcome,
                Outcome::StaleFencingToken { .. }
                    | Outcome::WrongState { .. }
                    | Outcome::TaskNotFound { .. }
                    | Outcome::SessionNotFound { .. }
                    | Outcome::InvalidCommand { .. }
                    | Outcome::LimitReached { .. }
                    | Outcome::NoTaskAssigned
                    | Outcome::TaskSubmitted { existing: true, .. }
            );
            if refused {
                let mut unchanged = before.clone();
                unchanged.last_command_index += 1;
                assert!(
                    *after == unchanged,
                    "{command:?} → {outcome:?} changed state"
                );
            }
        }
        for task in after.tasks.range_from(None) {
            self.tokens
                .entry(task.id)
                .or_default()
                .insert(task.fencing_token);
        }
    }

    fn check_determinism(&self) {
        let replay = || {
            let mut state = State::default();
            for batch in &self.batches {
                state.apply_batch(batch);
            }
            codec::encode(&state).expect("encodes")
        };
        let first = replay();
        assert_eq!(first, replay(), "same batches, same bytes");
        assert_eq!(first, codec::encode(&self.whole).expect("encodes"));
        // A decoded state rebuilds its derived indexes: equal, and consistent.
        let decoded: State = codec::decode(&first).expect("decodes");
        decoded.tasks.assert_indexes_consistent();
        decoded.sessions.assert_indexes_consistent();
        assert!(
            decoded == self.whole,
            "a snapshot round trip keeps every index"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operations_keep_the_scheduler_invariants(
        ops in proptest::collection::vec((op(), proptest::bool::weighted(0.4)), 1..60)
    ) {
        Run::execute(&ops);
    }
}

/// Operations weighted towards a long mixed queue: many submissions over 16
/// capability sets and a wide priority range, sessions coming and going, and
/// completions and failures that free room.
fn busy_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..16, 0u32..=3, 500u64..=5_000).prop_map(|(capabilities, capacity, ttl_ms)| {
            Op::CreateSession { capabilities, capacity, ttl_ms }
        }),
        6 => (0u8..16, -3i32..=3, 1u32..=3, 200u64..=2_000, proptest::option::of(any::<Index>()))
            .prop_map(|(required, priority, max_attempts, lease_ms, depends_on)| Op::Submit {
                required,
                priority,
                max_attempts,
                lease_ms,
                // Mostly independent tasks, so most of them queue at once.
                depends_on: depends_on.filter(|index| index.index(4) == 0),
            }),
        2 => (target(), token()).prop_map(|(task, token)| Op::Complete(task, token)),
        1 => (target(), token(), any::<bool>())
            .prop_map(|(task, token, retryable)| Op::Fail(task, token, retryable)),
        1 => target().prop_map(Op::Cancel),
        1 => target().prop_map(Op::EndSession),
        1 => (0u64..=2_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every batch gives the same outcomes and the same state (assignments, loads,
    /// fencing tokens) as the original full-scan assignment, and the capability-set
    /// queues and room indexes stay consistent with the records.
    #[test]
    fn indexed_assignment_matches_the_full_scan_reference(
        ops in proptest::collection::vec((busy_op(), proptest::bool::weighted(0.3)), 1..150)
    ) {
        Run::execute(&ops);
    }
}

/// Task limits small enough for a short run to fill the store and outlive retention
/// (a GC batch no run can exceed, so every time step removes everything expired).
const SMALL_TASK_LIMITS: TaskLimits = TaskLimits {
    max_tasks: 8,
    retention_ms: 3_000,
    gc_batch: 1_000,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The same invariants with terminal tasks removed after their retention and
    /// evicted from a full store: only terminal tasks go, only when due (or the
    /// oldest, to make room), every index (the terminal one included) stays
    /// consistent, and a snapshot round trip rebuilds them.
    #[test]
    fn random_operations_with_retention_and_eviction_keep_the_scheduler_invariants(
        ops in proptest::collection::vec((op(), proptest::bool::weighted(0.4)), 1..100)
    ) {
        task_limits::with(SMALL_TASK_LIMITS, || Run::execute(&ops));
    }
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

// ----- retention and eviction of terminal tasks -----------------------------------

const RETENTION_MS: u64 = Replicated::TASK_RETENTION_MS;

#[test]
fn a_succeeded_task_is_readable_until_its_retention_passes_and_then_gone() {
    let mut m = Machine::default();
    let worker = m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
    let token = m.claim(10, worker);
    assert_eq!(
        m.apply_one(100, complete(task, token, "7")),
        updated(task, TaskState::Succeeded)
    );
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
        Outcome::TaskNotFound { task_id: task }
    );
    assert_eq!(m.state.next_due_ms(), Some(FOREVER_MS));
}

#[test]
fn dead_and_cancelled_tasks_are_removed_when_their_own_retention_passes() {
    let mut m = Machine::default();
    m.session(0, &[], 1, FOREVER_MS);
    let dead = m.submit(0, task_spec(&[]));
    let cancelled = m.submit(0, task_spec(&[]));
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
    let mut m = Machine::default();
    m.session(0, &[], 1, FOREVER_MS);
    let task = m.submit(0, task_spec(&[]));
    m.apply_one(10, fail(task, task, false));
    let retried = match m.apply_one(20, retry(task)) {
        Outcome::TaskUpdated { state, .. } => state,
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
            Outcome::TaskSubmitted { task_id, .. } => task_id,
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
            matches!(outcome, Outcome::LimitReached { .. }),
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
    let limits = TaskLimits {
        max_tasks: 2,
        ..TaskLimits::REPLICATED
    };
    task_limits::with(limits, || {
        let mut m = Machine::default();
        m.session(0, &[], 1, FOREVER_MS);
        let root = m.submit(0, task_spec(&[]));
        m.apply_one(1, complete(root, root, "null"));
        let running = m.submit(2, task_spec(&[]));
        assert_eq!(m.task(running).state, TaskState::Assigned);
        let outcome = m.apply_one(
            3,
            submit(NewTask {
                depends_on: vec![root],
                ..task_spec(&[])
            }),
        );
        assert!(
            matches!(outcome, Outcome::LimitReached { .. }),
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
        Outcome::TaskSubmitted {
            task_id: first,
            state: TaskState::Cancelled,
            existing: true
        },
        "kept while retained"
    );
    m.apply(1 + RETENTION_MS, vec![]);
    assert!(m.state.tasks.get(first).is_none());
    assert_eq!(m.state.tasks.by_idempotency_key("nightly"), None);
    let second = match m.apply_one(2 + RETENTION_MS, submit(keyed())) {
        Outcome::TaskSubmitted {
            task_id,
            existing: false,
            state: TaskState::Queued,
        } => task_id,
        other => panic!("{other:?}"),
    };
    assert_ne!(second, first);
    assert_eq!(m.state.tasks.by_idempotency_key("nightly"), Some(second));
    // Naming the removed task is refused like naming one that never existed.
    assert_eq!(
        m.apply_one(
            3 + RETENTION_MS,
            submit(NewTask {
                depends_on: vec![second, first],
                ..task_spec(&[])
            })
        ),
        Outcome::TaskNotFound { task_id: first }
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
    let on_a = m.submit(
        0,
        NewTask {
            depends_on: vec![a],
            ..task_spec(&[])
        },
    );
    let on_both = m.submit(
        0,
        NewTask {
            depends_on: vec![a, c],
            ..task_spec(&[])
        },
    );
    let on_c = m.submit(
        0,
        NewTask {
            depends_on: vec![c],
            ..task_spec(&[])
        },
    );
    // Cancelled dependents: `a` and `c` list them after they are gone.
    m.apply(1, vec![cancel(on_a), cancel(on_c)]);
    let worker = m.session(1, &[], 1, FOREVER_MS);
    assert_eq!(m.assigned(worker), vec![a]);
    let a_token = m.task(a).fencing_token;
    assert_eq!(
        m.apply_one(2, complete(a, a_token, "1")),
        updated(a, TaskState::Succeeded)
    );
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
    assert_eq!(
        m.apply_one(3 + RETENTION_MS, complete(c, c_token, "2")),
        updated(c, TaskState::Succeeded)
    );
    assert_eq!(m.task(on_both).state, TaskState::Assigned);
    m.state.tasks.assert_indexes_consistent();
}

#[test]
fn a_decoded_snapshot_rebuilds_the_terminal_index_and_removes_exactly_as_the_original() {
    let mut original = Machine::default();
    original.session(0, &[], 1, FOREVER_MS);
    let done = original.submit(0, task_spec(&[]));
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
    let three = TaskLimits {
        max_tasks: 3,
        ..TaskLimits::REPLICATED
    };
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

// ----- regressions ------------------------------------------------------------------

#[test]
fn claim_takes_the_sessions_highest_priority_task_first() {
    let mut m = Machine::default();
    m.apply_one(0, create_session(&[], 2, 60_000));
    let low = match m.apply_one(1, submit(task_spec(&[]))) {
        Outcome::TaskSubmitted { task_id, .. } => task_id,
        other => panic!("{other:?}"),
    };
    let urgent = match m.apply_one(
        2,
        submit(NewTask {
            priority: 5,
            ..task_spec(&[])
        }),
    ) {
        Outcome::TaskSubmitted { task_id, .. } => task_id,
        other => panic!("{other:?}"),
    };
    assert!(
        matches!(m.apply_one(3, claim(1)), Outcome::TaskClaimed { task_id, .. } if task_id == urgent)
    );
    assert!(
        matches!(m.apply_one(4, claim(1)), Outcome::TaskClaimed { task_id, .. } if task_id == low)
    );
}

#[test]
fn a_capacity_refusal_is_not_remembered_under_its_request_id() {
    let mut state = State::default();
    let create = || create_session(&[], 0, 60_000);
    let fill: Vec<Proposal> = (0..crate::limits::Replicated::MAX_SESSIONS)
        .map(|_| Proposal {
            request_id: None,
            guard: None,
            command: create(),
        })
        .collect();
    state.apply_batch(&Batch {
        leader_time_ms: 0,
        proposals: fill,
    });
    let with_id = || Proposal {
        request_id: Some("r".into()),
        guard: None,
        command: create(),
    };
    let refused = state.apply_batch(&Batch {
        leader_time_ms: 1,
        proposals: vec![with_id()],
    });
    assert!(matches!(
        refused.results[0].outcome,
        Outcome::LimitReached { .. }
    ));
    state.apply_batch(&batch(2, vec![Command::SessionEnd { session_id: 1 }]));
    let retried = state.apply_batch(&Batch {
        leader_time_ms: 3,
        proposals: vec![with_id()],
    });
    assert!(
        matches!(retried.results[0].outcome, Outcome::SessionCreated { .. }),
        "{:?}",
        retried.results
    );
}
