//! Helpers shared by the state machine's unit tests: apply commands as one batch at
//! a given cluster time, build each command, and make sessions (one helper,
//! [`open_session`], for every test file that needs a session's id). It is test-only
//! and, like the tests, drives the state machine only through [`State::apply_batch`].

use crate::sm::sessions::SessionCommand;
use crate::sm::tasks::TaskCommand;
use std::collections::BTreeSet;

use super::barriers::BarrierCommand;
use super::elections::ElectionCommand;
use super::locks::{LockCommand, LockMode};
use super::semaphores::SemaphoreCommand;
use super::sessions::{NewSession, Session, SessionId};
use super::tasks::{NewTask, Task, TaskError, TaskId, TaskState};
use super::{Batch, Command, Guard, GuardKind, Outcome, State, Submission};
use crate::sm::{LockOutcome, SessionOutcome, TaskOutcome};

/// A TTL or lease long enough never to run out in a test.
pub const FOREVER_MS: u64 = 1_000_000_000;

// ----- applying -------------------------------------------------------------------

/// One batch stamped `time_ms` of `commands`, without request ids or guards.
pub fn batch(time_ms: u64, commands: Vec<Command>) -> Batch {
    Batch {
        leader_time_ms: time_ms,
        submissions: commands
            .into_iter()
            .map(|command| Submission {
                guard: None,
                acting_as: None,
                request_id: None,
                command,
            })
            .collect(),
    }
}

/// Applies `commands` as one batch stamped `time_ms`; returns their outcomes.
pub fn run(state: &mut State, time_ms: u64, commands: Vec<Command>) -> Vec<Outcome> {
    state
        .apply_batch(&batch(time_ms, commands))
        .results
        .into_iter()
        .map(|applied| applied.outcome)
        .collect()
}

/// Applies one command at `time_ms`; returns its outcome.
pub fn one(state: &mut State, time_ms: u64, command: Command) -> Outcome {
    run(state, time_ms, vec![command]).remove(0)
}

/// Applies `submissions` (with their guards) as one batch stamped `time_ms`;
/// returns their outcomes.
pub fn run_submissions(
    state: &mut State,
    time_ms: u64,
    submissions: Vec<Submission>,
) -> Vec<Outcome> {
    state
        .apply_batch(&Batch {
            leader_time_ms: time_ms,
            submissions,
        })
        .results
        .into_iter()
        .map(|applied| applied.outcome)
        .collect()
}

/// A plain write of `1` to key `k` (no session), guarded by a `kind` guard on
/// `name` with `fencing_token`.
pub fn guarded_put(kind: GuardKind, name: &str, fencing_token: u64) -> Submission {
    Submission {
        request_id: None,
        acting_as: None,
        guard: Some(Guard {
            kind,
            name: name.into(),
            fencing_token,
        }),
        command: put("k", None),
    }
}

// ----- sessions -------------------------------------------------------------------

pub fn caps(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// A session-create command: these capabilities, room for `capacity` tasks, living
/// `ttl_ms` from its create unless kept alive.
pub fn create_session(capabilities: &[&str], capacity: u32, ttl_ms: u64) -> Command {
    Command::Session(SessionCommand::Create(NewSession {
        name: "worker".into(),
        capabilities: caps(capabilities),
        capacity,
        ttl_ms,
        metadata_json: "{}".into(),
        owner: None,
    }))
}

/// A session-create command with no capabilities and no room for tasks.
pub fn session(ttl_ms: u64) -> Command {
    create_session(&[], 0, ttl_ms)
}

/// Creates a session at `time_ms` and returns its id; panics if it is refused.
pub fn open_session(
    state: &mut State,
    time_ms: u64,
    capabilities: &[&str],
    capacity: u32,
    ttl_ms: u64,
) -> SessionId {
    match one(
        state,
        time_ms,
        create_session(capabilities, capacity, ttl_ms),
    ) {
        Outcome::Session(SessionOutcome::Created { session_id, .. }) => session_id,
        other => panic!("session not created: {other:?}"),
    }
}

/// Creates `n` sessions with `ttl_ms` in one batch at `time_ms`; returns their ids
/// in order and panics if any is refused.
pub fn open_sessions(state: &mut State, time_ms: u64, n: usize, ttl_ms: u64) -> Vec<SessionId> {
    run(state, time_ms, (0..n).map(|_| session(ttl_ms)).collect())
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Session(SessionOutcome::Created { session_id, .. }) => session_id,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// A state with `n` sessions (ids 1..=n) created at time 0 with `ttl_ms`.
pub fn with_sessions_ttl(n: u64, ttl_ms: u64) -> State {
    let mut state = State::default();
    run(&mut state, 0, (0..n).map(|_| session(ttl_ms)).collect());
    state
}

pub fn keepalive(session_id: SessionId) -> Command {
    Command::Session(SessionCommand::Keepalive { session_id })
}

pub fn end_session(session_id: SessionId) -> Command {
    Command::Session(SessionCommand::End { session_id })
}

pub fn tick(renewals: &[(SessionId, u64)]) -> Command {
    Command::Tick {
        renewals: renewals.to_vec(),
    }
}

/// A state with `n` sessions (ids 1..=n, 10 s TTL) and one more (id n+1) living
/// 1 s, all created at time 0; returns the state and the short session's id.
pub fn with_sessions_and_a_short_one(n: u64) -> (State, SessionId) {
    let mut state = with_sessions_ttl(n, 10_000);
    let short = open_session(&mut state, 0, &[], 0, 1_000);
    (state, short)
}

// ----- keys -----------------------------------------------------------------------

/// A plain write of `1` to `key`, bound to `session_id` if given.
pub fn put(key: &str, session_id: Option<SessionId>) -> Command {
    Command::Kv(crate::sm::kv::KvCommand::Put {
        key: key.into(),
        value_json: "1".into(),
        if_version: None,
        session_id,
    })
}

pub fn delete(key: &str) -> Command {
    Command::Kv(crate::sm::kv::KvCommand::Delete {
        key: key.into(),
        if_version: None,
    })
}

// ----- locks ----------------------------------------------------------------------

/// An acquire of `name` in `mode` (queuing if `wait`), creating no lock-delay and
/// presenting no lost token.
pub fn acquire_lock(name: &str, session_id: SessionId, mode: LockMode, wait: bool) -> Command {
    Command::Lock(LockCommand::Acquire {
        name: name.into(),
        session_id,
        mode,
        wait,
        lock_delay_ms: 0,
        previous_token: None,
    })
}

/// A waiting exclusive acquire that creates the lock with a lock-delay, or presents
/// a token lost to expiry.
pub fn acquire_lock_delayed(
    name: &str,
    session_id: SessionId,
    lock_delay_ms: u64,
    previous_token: Option<u64>,
) -> Command {
    Command::Lock(LockCommand::Acquire {
        name: name.into(),
        session_id,
        mode: LockMode::Exclusive,
        wait: true,
        lock_delay_ms,
        previous_token,
    })
}

pub fn release_lock(name: &str, session_id: SessionId, fencing_token: u64) -> Command {
    Command::Lock(LockCommand::Release {
        name: name.into(),
        session_id,
        fencing_token,
    })
}

pub fn withdraw_lock(name: &str, waiter_id: u64) -> Command {
    Command::Lock(LockCommand::Withdraw {
        name: name.into(),
        waiter_id,
    })
}

/// Applies each non-waiting acquire `(name, session, mode)` as its own command at
/// `time_ms`, in order; returns their fencing tokens and panics unless each is
/// granted.
pub fn grant_each(
    state: &mut State,
    time_ms: u64,
    acquires: &[(&str, SessionId, LockMode)],
) -> Vec<u64> {
    acquires
        .iter()
        .map(|&(name, session_id, mode)| {
            granted_token(&one(
                state,
                time_ms,
                acquire_lock(name, session_id, mode, false),
            ))
        })
        .collect()
}

/// A state with `n` sessions (ids 1..=n, 10 s TTL) created at time 0 and the
/// acquires `(name, session, mode)` granted one command each at time 1.
pub fn holding(n: u64, acquires: &[(&str, SessionId, LockMode)]) -> State {
    let mut state = with_sessions_ttl(n, 10_000);
    grant_each(&mut state, 1, acquires);
    state
}

/// A withdraw of the `nth` waiter (from the head) of `name`, if there is one.
pub fn withdraw_nth(state: &State, name: &str, nth: u8) -> Option<Command> {
    let waiter = state.locks.get(name)?.waiters.get(usize::from(nth))?;
    Some(withdraw_lock(name, waiter.waiter_id))
}

/// The fencing token of a grant; panics on any other outcome.
pub fn granted_token(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Lock(LockOutcome::Granted { fencing_token }) => *fencing_token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

/// The (session, mode) of each holder of `name`, in grant order (none if absent).
pub fn lock_holders(state: &State, name: &str) -> Vec<(SessionId, LockMode)> {
    state.locks.get(name).map_or(Vec::new(), |lock| {
        lock.holders
            .iter()
            .map(|h| (h.session_id, h.mode))
            .collect()
    })
}

// ----- tasks ----------------------------------------------------------------------

/// A task with defaults (priority 0, 3 attempts, a 1 s lease); tests override fields
/// with `NewTask { field, ..task_spec(&[..]) }`.
pub fn task_spec(required: &[&str]) -> NewTask {
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

/// A default task (see [`task_spec`]) that depends on `depends_on`.
pub fn depending_on(depends_on: &[TaskId]) -> NewTask {
    NewTask {
        depends_on: depends_on.to_vec(),
        ..task_spec(&[])
    }
}

pub fn submit(task: NewTask) -> Command {
    Command::Task(TaskCommand::Submit(task))
}

pub fn claim(session_id: SessionId) -> Command {
    Command::Task(TaskCommand::Claim { session_id })
}

pub fn heartbeat(task_id: TaskId, fencing_token: u64, progress: Option<&str>) -> Command {
    Command::Task(TaskCommand::Heartbeat {
        task_id,
        fencing_token,
        progress_json: progress.map(str::to_owned),
    })
}

pub fn complete(task_id: TaskId, fencing_token: u64, result: &str) -> Command {
    Command::Task(TaskCommand::Complete {
        task_id,
        fencing_token,
        result_json: result.into(),
    })
}

/// A failure with the error text `boom`.
pub fn fail(task_id: TaskId, fencing_token: u64, retryable: bool) -> Command {
    Command::Task(TaskCommand::Fail {
        task_id,
        fencing_token,
        error: "boom".into(),
        retryable,
    })
}

pub fn cancel(task_id: TaskId) -> Command {
    Command::Task(TaskCommand::Cancel { task_id })
}

pub fn retry(task_id: TaskId) -> Command {
    Command::Task(TaskCommand::Retry { task_id })
}

pub fn updated(task_id: TaskId, state: TaskState) -> Outcome {
    Outcome::Task(TaskOutcome::Updated { task_id, state })
}

/// The error record a task keeps for an attempt.
pub fn error(attempt: u32, reason: &str, error: &str, at_ms: u64) -> TaskError {
    TaskError {
        attempt,
        reason: reason.into(),
        error: error.into(),
        at_ms,
    }
}

// ----- a machine ------------------------------------------------------------------

/// A state machine driven the way the log drives it: one batch at a time.
#[derive(Default)]
pub struct Machine {
    pub state: State,
}

impl Machine {
    /// A machine with one capability-less session (id 1) of `capacity`, created at
    /// time 0 and never expiring, and `N` default tasks submitted one command each
    /// at `submit_ms`; returns the machine, the session and the tasks.
    pub fn with_worker_and_tasks<const N: usize>(
        capacity: u32,
        submit_ms: u64,
    ) -> (Self, SessionId, [TaskId; N]) {
        let mut m = Self::default();
        let worker = m.session(0, &[], capacity, FOREVER_MS);
        let tasks = [(); N].map(|()| m.submit(submit_ms, task_spec(&[])));
        (m, worker, tasks)
    }

    pub fn apply(&mut self, time_ms: u64, commands: Vec<Command>) -> Vec<Outcome> {
        run(&mut self.state, time_ms, commands)
    }

    pub fn apply_one(&mut self, time_ms: u64, command: Command) -> Outcome {
        one(&mut self.state, time_ms, command)
    }

    pub fn session(
        &mut self,
        time_ms: u64,
        capabilities: &[&str],
        capacity: u32,
        ttl_ms: u64,
    ) -> SessionId {
        open_session(&mut self.state, time_ms, capabilities, capacity, ttl_ms)
    }

    pub fn submit(&mut self, time_ms: u64, task: NewTask) -> TaskId {
        match self.apply_one(time_ms, submit(task)) {
            Outcome::Task(TaskOutcome::Submitted { task_id, .. }) => task_id,
            other => panic!("task not submitted: {other:?}"),
        }
    }

    /// Claims the session's next task and returns its fencing token.
    pub fn claim(&mut self, time_ms: u64, session_id: SessionId) -> u64 {
        match self.apply_one(time_ms, claim(session_id)) {
            Outcome::Task(TaskOutcome::Claimed { fencing_token, .. }) => fencing_token,
            other => panic!("nothing claimed: {other:?}"),
        }
    }

    /// Completes `task_id` with `result` at `time_ms` and asserts it succeeded.
    #[track_caller]
    pub fn complete_ok(&mut self, time_ms: u64, task_id: TaskId, fencing_token: u64, result: &str) {
        assert_eq!(
            self.apply_one(time_ms, complete(task_id, fencing_token, result)),
            updated(task_id, TaskState::Succeeded)
        );
    }

    /// Asserts `task_id` is `waiting` with `not_before_ms` at `at_ms`, still `waiting`
    /// after an empty batch at `at_ms - 1`, and queued by one at `at_ms`.
    #[track_caller]
    pub fn assert_queued_at(&mut self, task_id: TaskId, waiting: TaskState, at_ms: u64) {
        assert_eq!(
            (self.task(task_id).state, self.task(task_id).not_before_ms),
            (waiting, at_ms)
        );
        self.apply(at_ms - 1, vec![]);
        assert_eq!(self.task(task_id).state, waiting);
        self.apply(at_ms, vec![]);
        assert_eq!(self.task(task_id).state, TaskState::Queued);
    }

    pub fn task(&self, id: TaskId) -> &Task {
        self.state.tasks.get(id).expect("task exists")
    }

    pub fn live_session(&self, id: SessionId) -> Option<&Session> {
        self.state.sessions.get(id)
    }

    pub fn assigned(&self, session_id: SessionId) -> Vec<TaskId> {
        self.state.tasks.assigned_to(session_id)
    }
}

// ----- semaphores, barriers, elections -------------------------------------------

/// An acquire of `permits` of semaphore `S` with `limit`.
pub fn acquire_permits(session_id: SessionId, permits: u32, limit: u32, wait: bool) -> Command {
    Command::Semaphore(SemaphoreCommand::Acquire {
        name: "S".into(),
        session_id,
        permits,
        limit,
        wait,
    })
}

/// An arrival at barrier `B` of `parties`.
pub fn arrive(session_id: SessionId, parties: u32) -> Command {
    Command::Barrier(BarrierCommand::Wait {
        name: "B".into(),
        session_id,
        parties,
    })
}

/// A campaign for election `E` with the value `"n<session>"`.
pub fn campaign(session_id: SessionId, priority: i32, wait: bool) -> Command {
    Command::Election(ElectionCommand::Campaign {
        name: "E".into(),
        session_id,
        value_json: format!("\"n{session_id}\""),
        priority,
        wait,
    })
}

/// A resignation from election `E` by `session_id` with `term`.
pub fn resign(session_id: SessionId, term: u64) -> Command {
    Command::Election(ElectionCommand::Resign {
        name: "E".into(),
        session_id,
        term,
    })
}

/// The (session, term) of the leader of election `E`, if any.
pub fn election_leader(state: &State) -> Option<(SessionId, u64)> {
    state
        .elections
        .get("E")
        .and_then(|e| e.leader.as_ref())
        .map(|l| (l.session_id, l.term))
}
