//! The rules of sessions and tasks: assignment by capability and load, leases,
//! retries with backoff, the dead-letter state, dependencies, and expiry.
//!
//! Everything here is a method on [`State`] so one command sees sessions and tasks
//! together; every decision is a function of replicated state and the command's
//! cluster time, so every replica makes the same one.
//!
//! Terminal tasks are not kept forever: each is removed
//! [`Replicated::TASK_RETENTION_MS`] of cluster time after it became terminal (at most
//! [`Replicated::TASK_GC_BATCH`] per advance of time), and a submit that would exceed
//! [`Replicated::MAX_TASKS`] evicts the oldest terminal task first. Removing a terminal
//! task strands nothing: its dependents were resolved when it became terminal (see
//! `remove_expired_tasks`).

use std::collections::BTreeSet;

use super::command::Outcome;
use super::sessions::{NewSession, SessionId};
use super::tasks::{NewTask, Task, TaskError, TaskId, TaskState};
use super::State;
use crate::limits::Replicated;

/// Retry backoff after the `attempts`-th attempt failed: doubling from the base, capped.
pub fn retry_backoff_ms(attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(20);
    (Replicated::TASK_RETRY_BACKOFF_BASE_MS << doublings).min(Replicated::TASK_RETRY_BACKOFF_MAX_MS)
}

fn session_not_found(session_id: SessionId) -> Outcome {
    Outcome::SessionNotFound { session_id }
}

fn task_not_found(task_id: TaskId) -> Outcome {
    Outcome::TaskNotFound { task_id }
}

/// The replicated task limits in force: [`Replicated`]'s, or in tests the ones a test
/// set for its thread with `task_limits::with` (so a test can fill the store or
/// outlive retention without a million tasks or a day of cluster time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TaskLimits {
    pub max_tasks: usize,
    pub retention_ms: u64,
    pub gc_batch: usize,
}

impl TaskLimits {
    pub const REPLICATED: Self = Self {
        max_tasks: Replicated::MAX_TASKS,
        retention_ms: Replicated::TASK_RETENTION_MS,
        gc_batch: Replicated::TASK_GC_BATCH,
    };

    pub(super) fn current() -> Self {
        #[cfg(test)]
        if let Some(limits) = task_limits::get() {
            return limits;
        }
        Self::REPLICATED
    }
}

impl State {
    // ----- sessions -------------------------------------------------------------

    pub(super) fn create_session(&mut self, new: &NewSession, index: u64) -> Outcome {
        if self.sessions.len() >= Replicated::MAX_SESSIONS {
            return Outcome::LimitReached {
                message: format!("at most {} sessions", Replicated::MAX_SESSIONS),
            };
        }
        let session = self
            .sessions
            .create(index, new.clone(), self.cluster_time_ms);
        Outcome::SessionCreated {
            session_id: session.id,
            expires_at_ms: session.expires_at_ms,
        }
    }

    pub(super) fn renew_session(&mut self, id: SessionId, at_ms: u64) -> Outcome {
        match self.sessions.renew(id, at_ms.min(self.cluster_time_ms)) {
            Some(expires_at_ms) => Outcome::SessionRenewed { expires_at_ms },
            None => session_not_found(id),
        }
    }

    /// Ends a session: its ephemeral keys go, its assigned tasks are requeued
    /// (the attempt counted), and queued work is reassigned.
    /// `expired` distinguishes expiry from an explicit end (lock-delay applies only
    /// to expiry).
    pub(super) fn end_session(&mut self, id: SessionId, reason: &str, expired: bool) -> Outcome {
        let Some(session) = self.sessions.remove(id) else {
            return session_not_found(id);
        };
        self.kv_on_session_end(&session);
        for task_id in self.tasks.assigned_to(id) {
            self.lose_lease(task_id, reason);
        }
        self.locks_on_session_end(&session, expired);
        self.release_session_primitives(id);
        Outcome::SessionEnded
    }

    // ----- time -----------------------------------------------------------------

    /// Expires sessions, fires task timers that are due at cluster time and removes
    /// terminal tasks whose retention has passed.
    pub(super) fn advance_time(&mut self) {
        let now = self.cluster_time_ms;
        while let Some(id) = self.sessions.next_expired(now) {
            self.end_session(id, "session_ended", true);
        }
        self.end_lock_delays();
        while let Some(id) = self.tasks.next_due(now) {
            let state = self.tasks.get(id).map(|task| task.state);
            match state {
                Some(TaskState::Assigned) => self.lose_lease(id, "lease_expired"),
                Some(TaskState::Pending | TaskState::Failed) => {
                    self.tasks.update(id, |task| {
                        task.timer_ms = None;
                        task.state = TaskState::Queued;
                    });
                }
                _ => {
                    self.tasks.update(id, |task| task.timer_ms = None);
                }
            }
        }
        self.remove_expired_tasks(now);
    }

    /// Removes terminal tasks that became terminal at least the retention period
    /// before `now_ms`, oldest first (then by id), at most the GC batch per call. While
    /// expired ones remain, [`Self::next_due_ms`] stays due, so the next batch goes on.
    ///
    /// Removal strands no other task. A task's dependents were all resolved when it
    /// became terminal: `complete_task` readies each pending one (`make_ready_or_wait`),
    /// `dead_letter` and `cancel_task` cancel each non-terminal one
    /// (`cancel_dependents`), and a task submitted later naming a terminal dependency
    /// is readied or cancelled in its own submit. A dependent still pending on other
    /// dependencies may outlive a removed (succeeded) one: `make_ready_or_wait` skips
    /// missing dependencies, and the only ones that can be missing succeeded (a dead or
    /// cancelled one would have cancelled it). Remaining tasks' `dependents` lists may
    /// name removed ids; every reader looks them up and skips a missing one.
    fn remove_expired_tasks(&mut self, now_ms: u64) {
        let limits = TaskLimits::current();
        for _ in 0..limits.gc_batch {
            match self.tasks.oldest_terminal() {
                Some((at, id)) if at.saturating_add(limits.retention_ms) <= now_ms => {
                    self.tasks.remove(id);
                }
                _ => return,
            }
        }
    }

    /// The earliest cluster time at which something expires or becomes ready.
    pub fn next_due_ms(&self) -> Option<u64> {
        [
            self.sessions.next_expiry_ms(),
            self.tasks.next_timer_ms(),
            self.tasks
                .oldest_terminal()
                .map(|(at, _)| at.saturating_add(TaskLimits::current().retention_ms)),
            self.lock_delays.first().map(|(until, _)| *until),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- tasks ----------------------------------------------------------------

    pub(super) fn submit_task(&mut self, new: &NewTask, index: u64) -> Outcome {
        if let Some(existing) = new
            .idempotency_key
            .as_deref()
            .and_then(|key| self.tasks.by_idempotency_key(key))
        {
            let state = self
                .tasks
                .get(existing)
                .map_or(TaskState::Cancelled, |task| task.state);
            return Outcome::TaskSubmitted {
                task_id: existing,
                state,
                existing: true,
            };
        }
        let unique: BTreeSet<TaskId> = new.depends_on.iter().copied().collect();
        if unique.len() != new.depends_on.len() {
            return Outcome::InvalidCommand {
                message: "depends_on lists a task twice".into(),
            };
        }
        // Dependencies must already exist, so a new task can never close a cycle. A
        // removed (expired or evicted) task is as unknown as one that never existed.
        if let Some(missing) = new
            .depends_on
            .iter()
            .find(|id| self.tasks.get(**id).is_none())
        {
            return task_not_found(*missing);
        }
        let max_tasks = TaskLimits::current().max_tasks;
        if self.tasks.len() >= max_tasks {
            // Make room by evicting the oldest terminal task, but not one this task
            // depends on (its state decides below whether this task runs). Refuse only
            // when there is none: all stored tasks are live.
            match self.tasks.oldest_terminal_except(&unique) {
                Some(oldest) => {
                    self.tasks.remove(oldest);
                }
                None => {
                    return Outcome::LimitReached {
                        message: format!(
                            "at most {max_tasks} tasks, and none is terminal (to evict)"
                        ),
                    };
                }
            }
        }
        let now = self.cluster_time_ms;
        let task = Task {
            id: index,
            spec: new.clone(),
            state: TaskState::Pending,
            attempts: 0,
            // `not_before_ms` is a delay from submission (a duration, per the API).
            not_before_ms: now.saturating_add(new.not_before_ms.unwrap_or(0)),
            session_id: None,
            fencing_token: 0,
            lease_expires_at_ms: 0,
            claimed: false,
            progress_json: None,
            cancel_requested: false,
            result_json: None,
            errors: Vec::new(),
            dependents: Vec::new(),
            created_at_ms: now,
            updated_at_ms: now,
            timer_ms: None,
        };
        self.tasks.insert(task);
        for dependency in &new.depends_on {
            self.tasks
                .update(*dependency, |task| task.dependents.push(index));
        }
        self.make_ready_or_wait(index);
        let state = self
            .tasks
            .get(index)
            .map_or(TaskState::Pending, |task| task.state);
        Outcome::TaskSubmitted {
            task_id: index,
            state,
            existing: false,
        }
    }

    /// Moves a pending task on: cancelled if a dependency failed, queued if all
    /// succeeded and `not_before` passed, else pending (with a timer for not_before).
    /// A dependency that was removed is skipped: it can only have succeeded (a dead or
    /// cancelled one cancelled this task when it became terminal, or in its submit).
    fn make_ready_or_wait(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get(id) else {
            return;
        };
        let dependency_states: Vec<TaskState> = task
            .spec
            .depends_on
            .iter()
            .filter_map(|d| self.tasks.get(*d))
            .map(|d| d.state)
            .collect();
        if dependency_states
            .iter()
            .any(|s| matches!(s, TaskState::Dead | TaskState::Cancelled))
        {
            self.cancel_task(id);
            return;
        }
        let waiting_on_dependencies = dependency_states.iter().any(|s| *s != TaskState::Succeeded);
        let not_before = task.not_before_ms;
        let now = self.cluster_time_ms;
        self.tasks.update(id, |task| {
            task.updated_at_ms = now;
            if waiting_on_dependencies {
                task.state = TaskState::Pending;
                task.timer_ms = None;
            } else if not_before > now {
                task.state = TaskState::Pending;
                task.timer_ms = Some(not_before);
            } else {
                task.state = TaskState::Queued;
                task.timer_ms = None;
            }
        });
    }

    /// Assigns queued tasks, highest priority first and FIFO within a priority, each
    /// to the least-loaded live session that has every required capability and room
    /// (ties broken by session id). A task that cannot be placed does not hold up the
    /// tasks behind it that can.
    ///
    /// Only the first queued task of each required-capability set is ever looked at:
    /// the tasks behind it need the same capabilities, so while it cannot be placed
    /// neither can they, and once it is assigned the next one becomes that set's head.
    /// Walking the heads in assignment order therefore visits exactly the tasks the
    /// full queue walk would try, in the same order, and skips only tasks whose set
    /// was already found unplaceable in this call (room only shrinks while assigning,
    /// so such a set stays unplaceable). The cost is O((capability sets found
    /// unplaceable + assignments made) × log), whatever the queue length, plus a
    /// session search per head that looks at capability profiles, not sessions.
    pub(super) fn assign_ready(&mut self, index: u64) {
        #[cfg(test)]
        if reference::enabled() {
            return self.assign_ready_by_full_scan(index);
        }
        #[cfg(test)]
        let _call = work::Call::start();
        // Heads before the cursor all belong to sets found unplaceable in this call.
        let mut cursor = None;
        while self.sessions.any_room() {
            let Some(position) = self.tasks.next_queue_head(cursor) else {
                return;
            };
            cursor = Some(position);
            #[cfg(test)]
            count_assignment_work(1);
            let task_id = position.1;
            let Some(required) = self
                .tasks
                .get(task_id)
                .map(|task| &task.spec.required_capabilities)
            else {
                continue;
            };
            if let Some(session_id) = self.sessions.best_with_room(required) {
                self.assign(task_id, session_id, index);
            }
        }
    }

    /// The original assignment walk, kept as the reference the indexed one is tested
    /// against: every queued task in order, every session with room for each.
    #[cfg(test)]
    fn assign_ready_by_full_scan(&mut self, index: u64) {
        let mut unplaceable: BTreeSet<BTreeSet<String>> = BTreeSet::new();
        let mut cursor = None;
        while self.sessions.any_room() {
            let Some(position) = self.tasks.next_queued(cursor) else {
                return;
            };
            cursor = Some(position);
            let task_id = position.1;
            let Some(required) = self
                .tasks
                .get(task_id)
                .map(|task| &task.spec.required_capabilities)
            else {
                continue;
            };
            if unplaceable.contains(required) {
                continue;
            }
            let best = self
                .sessions
                .with_room_in_order()
                .find(|session| session.has_capabilities(required))
                .map(|session| session.id);
            match best {
                Some(session_id) => self.assign(task_id, session_id, index),
                None => {
                    unplaceable.insert(required.clone());
                }
            }
        }
    }

    fn assign(&mut self, task_id: TaskId, session_id: SessionId, index: u64) {
        let now = self.cluster_time_ms;
        self.tasks.update(task_id, |task| {
            task.state = TaskState::Assigned;
            task.session_id = Some(session_id);
            task.attempts += 1;
            task.fencing_token = index;
            task.claimed = false;
            task.cancel_requested = false;
            task.lease_expires_at_ms = now.saturating_add(task.spec.lease_ms);
            task.timer_ms = Some(task.lease_expires_at_ms);
            task.updated_at_ms = now;
        });
        self.sessions.change_load(session_id, 1);
    }

    /// Detaches an assigned task from its session, freeing the session's capacity.
    fn release(&mut self, task_id: TaskId) {
        let session_id = self.tasks.update(task_id, |task| {
            task.timer_ms = None;
            task.claimed = false;
            task.session_id.take()
        });
        if let Some(session_id) = session_id.flatten() {
            self.sessions.change_load(session_id, -1);
        }
    }

    /// A lease ended without success (expiry or session end): requeue, or dead-letter
    /// once `max_attempts` assignments have been used.
    fn lose_lease(&mut self, task_id: TaskId, reason: &str) {
        let now = self.cluster_time_ms;
        self.release(task_id);
        let out_of_attempts = self.tasks.update(task_id, |task| {
            task.errors.push(TaskError {
                attempt: task.attempts,
                reason: reason.into(),
                error: String::new(),
                at_ms: now,
            });
            task.updated_at_ms = now;
            task.attempts >= task.spec.max_attempts
        });
        if out_of_attempts == Some(true) {
            self.dead_letter(task_id);
        } else {
            self.tasks
                .update(task_id, |task| task.state = TaskState::Queued);
        }
    }

    fn dead_letter(&mut self, task_id: TaskId) {
        self.tasks.update(task_id, |task| {
            task.state = TaskState::Dead;
            task.timer_ms = None;
        });
        self.cancel_dependents(task_id);
    }

    /// Cancels every dependent not yet terminal. A dependent may have been removed
    /// (only a terminal one can be): it is skipped.
    fn cancel_dependents(&mut self, task_id: TaskId) {
        let dependents = self
            .tasks
            .get(task_id)
            .map(|task| task.dependents.clone())
            .unwrap_or_default();
        for dependent in dependents {
            if self
                .tasks
                .get(dependent)
                .is_some_and(|task| !task.state.is_terminal())
            {
                self.cancel_task(dependent);
            }
        }
    }

    fn cancel_task(&mut self, task_id: TaskId) {
        let now = self.cluster_time_ms;
        if self
            .tasks
            .get(task_id)
            .is_some_and(|task| task.state == TaskState::Assigned)
        {
            self.release(task_id);
        }
        self.tasks.update(task_id, |task| {
            task.cancel_requested = true;
            task.state = TaskState::Cancelled;
            task.timer_ms = None;
            task.updated_at_ms = now;
        });
        self.cancel_dependents(task_id);
    }

    /// Checks that `task_id` is assigned under `fencing_token`.
    fn check_lease(&self, task_id: TaskId, fencing_token: u64) -> Result<&Task, Outcome> {
        let task = self
            .tasks
            .get(task_id)
            .ok_or_else(|| task_not_found(task_id))?;
        if task.fencing_token != fencing_token {
            return Err(Outcome::StaleFencingToken {
                current: task.fencing_token,
            });
        }
        if task.state != TaskState::Assigned {
            return Err(Outcome::WrongState {
                message: format!("task {task_id} is {}", task.state.name()),
            });
        }
        Ok(task)
    }

    pub(super) fn claim_task(&mut self, session_id: SessionId) -> Outcome {
        if self.sessions.get(session_id).is_none() {
            return session_not_found(session_id);
        }
        // The session's highest-priority unclaimed task, oldest first among equals.
        let next = self
            .tasks
            .assigned_to(session_id)
            .into_iter()
            .filter_map(|id| self.tasks.get(id))
            .filter(|task| !task.claimed)
            .min_by_key(|task| (-i64::from(task.spec.priority), task.id))
            .map(|task| task.id);
        let Some(task_id) = next else {
            return Outcome::NoTaskAssigned;
        };
        let now = self.cluster_time_ms;
        let claimed = self.tasks.update(task_id, |task| {
            task.claimed = true;
            task.lease_expires_at_ms = now.saturating_add(task.spec.lease_ms);
            task.timer_ms = Some(task.lease_expires_at_ms);
            task.updated_at_ms = now;
            (task.fencing_token, task.lease_expires_at_ms)
        });
        let (fencing_token, lease_expires_at_ms) = claimed.expect("task exists");
        Outcome::TaskClaimed {
            task_id,
            fencing_token,
            lease_expires_at_ms,
        }
    }

    pub(super) fn heartbeat_task(
        &mut self,
        task_id: TaskId,
        fencing_token: u64,
        progress: &Option<String>,
    ) -> Outcome {
        // A cancelled task tells its last holder so, instead of a bare refusal.
        if let Some(task) = self.tasks.get(task_id) {
            if task.state == TaskState::Cancelled && task.fencing_token == fencing_token {
                return Outcome::TaskLeaseExtended {
                    lease_expires_at_ms: 0,
                    cancel_requested: true,
                };
            }
        }
        if let Err(refusal) = self.check_lease(task_id, fencing_token) {
            return refusal;
        }
        let now = self.cluster_time_ms;
        let extended = self.tasks.update(task_id, |task| {
            task.claimed = true;
            task.lease_expires_at_ms = task
                .lease_expires_at_ms
                .max(now.saturating_add(task.spec.lease_ms));
            task.timer_ms = Some(task.lease_expires_at_ms);
            if progress.is_some() {
                task.progress_json = progress.clone();
            }
            task.updated_at_ms = now;
            (task.lease_expires_at_ms, task.cancel_requested)
        });
        let (lease_expires_at_ms, cancel_requested) = extended.expect("task exists");
        Outcome::TaskLeaseExtended {
            lease_expires_at_ms,
            cancel_requested,
        }
    }

    pub(super) fn complete_task(
        &mut self,
        task_id: TaskId,
        fencing_token: u64,
        result_json: &str,
    ) -> Outcome {
        if let Err(refusal) = self.check_lease(task_id, fencing_token) {
            return refusal;
        }
        let now = self.cluster_time_ms;
        self.release(task_id);
        let dependents = self.tasks.update(task_id, |task| {
            task.state = TaskState::Succeeded;
            task.result_json = Some(result_json.to_owned());
            task.updated_at_ms = now;
            task.dependents.clone()
        });
        // A removed dependent (only a terminal one can be) is skipped.
        for dependent in dependents.unwrap_or_default() {
            if self
                .tasks
                .get(dependent)
                .is_some_and(|task| task.state == TaskState::Pending)
            {
                self.make_ready_or_wait(dependent);
            }
        }
        Outcome::TaskUpdated {
            task_id,
            state: TaskState::Succeeded,
        }
    }

    pub(super) fn fail_task(
        &mut self,
        task_id: TaskId,
        fencing_token: u64,
        error: &str,
        retryable: bool,
    ) -> Outcome {
        if let Err(refusal) = self.check_lease(task_id, fencing_token) {
            return refusal;
        }
        let now = self.cluster_time_ms;
        self.release(task_id);
        let retry_at = self.tasks.update(task_id, |task| {
            task.errors.push(TaskError {
                attempt: task.attempts,
                reason: "failed".into(),
                error: error.to_owned(),
                at_ms: now,
            });
            task.updated_at_ms = now;
            let retry = retryable && task.attempts < task.spec.max_attempts;
            retry.then(|| now.saturating_add(retry_backoff_ms(task.attempts)))
        });
        match retry_at.flatten() {
            Some(at) => {
                self.tasks.update(task_id, |task| {
                    task.state = TaskState::Failed;
                    task.not_before_ms = at;
                    task.timer_ms = Some(at);
                });
                Outcome::TaskUpdated {
                    task_id,
                    state: TaskState::Failed,
                }
            }
            None => {
                self.dead_letter(task_id);
                Outcome::TaskUpdated {
                    task_id,
                    state: TaskState::Dead,
                }
            }
        }
    }

    pub(super) fn cancel(&mut self, task_id: TaskId) -> Outcome {
        match self.tasks.get(task_id) {
            None => task_not_found(task_id),
            Some(task) if task.state.is_terminal() => Outcome::WrongState {
                message: format!("task {task_id} is already {}", task.state.name()),
            },
            Some(_) => {
                self.cancel_task(task_id);
                Outcome::TaskUpdated {
                    task_id,
                    state: TaskState::Cancelled,
                }
            }
        }
    }

    pub(super) fn retry_task(&mut self, task_id: TaskId) -> Outcome {
        match self.tasks.get(task_id).map(|task| task.state) {
            None => task_not_found(task_id),
            Some(TaskState::Dead) => {
                self.tasks.update(task_id, |task| {
                    task.attempts = 0;
                    task.not_before_ms = 0;
                });
                self.make_ready_or_wait(task_id);
                let state = self
                    .tasks
                    .get(task_id)
                    .map_or(TaskState::Dead, |task| task.state);
                Outcome::TaskUpdated { task_id, state }
            }
            Some(state) => Outcome::WrongState {
                message: format!("only a dead task can be retried; it is {}", state.name()),
            },
        }
    }
}

/// Runs `f` with the thread-local `key` set to `value`, then restores it: the one
/// mechanism behind the test-only switches below.
#[cfg(test)]
fn with_thread_local<T: Copy + 'static, R>(
    key: &'static std::thread::LocalKey<std::cell::Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    let before = key.with(|current| current.replace(value));
    let result = f();
    key.with(|current| current.set(before));
    result
}

/// Test-only override of the replicated task limits, per test thread.
#[cfg(test)]
pub(super) mod task_limits {
    use std::cell::Cell;

    use super::TaskLimits;

    thread_local! {
        static OVERRIDE: Cell<Option<TaskLimits>> = const { Cell::new(None) };
    }

    pub fn get() -> Option<TaskLimits> {
        OVERRIDE.with(Cell::get)
    }

    /// Runs `f` with `limits` in place of [`TaskLimits::REPLICATED`].
    pub fn with<R>(limits: TaskLimits, f: impl FnOnce() -> R) -> R {
        super::with_thread_local(&OVERRIDE, Some(limits), f)
    }
}

/// Test-only switch to the full-scan reference assignment, per test thread.
#[cfg(test)]
pub(super) mod reference {
    use std::cell::Cell;

    thread_local! {
        static ENABLED: Cell<bool> = const { Cell::new(false) };
    }

    pub fn enabled() -> bool {
        ENABLED.with(Cell::get)
    }

    /// Runs `f` with `assign_ready` replaced by the full-scan reference.
    pub fn with<R>(f: impl FnOnce() -> R) -> R {
        super::with_thread_local(&ENABLED, true, f)
    }
}

/// Test-only count of the steps one `assign_ready` call takes (queue heads visited
/// plus capability profiles examined), per test thread.
#[cfg(test)]
pub(super) mod work {
    use std::cell::Cell;

    thread_local! {
        static CURRENT: Cell<usize> = const { Cell::new(0) };
        static MAX: Cell<usize> = const { Cell::new(0) };
        static CALLS: Cell<usize> = const { Cell::new(0) };
    }

    /// Counts one call from its start to its drop.
    pub struct Call;

    impl Call {
        pub fn start() -> Self {
            CURRENT.with(|current| current.set(0));
            Call
        }
    }

    impl Drop for Call {
        fn drop(&mut self) {
            let steps = CURRENT.with(Cell::get);
            MAX.with(|max| max.set(max.get().max(steps)));
            CALLS.with(|calls| calls.set(calls.get() + 1));
        }
    }

    pub fn add(steps: usize) {
        CURRENT.with(|current| current.set(current.get() + steps));
    }

    /// (calls, most steps in one call) since the last take; resets both.
    pub fn take() -> (usize, usize) {
        (CALLS.with(|c| c.replace(0)), MAX.with(|m| m.replace(0)))
    }
}

#[cfg(test)]
pub(super) fn count_assignment_work(steps: usize) {
    work::add(steps);
}
