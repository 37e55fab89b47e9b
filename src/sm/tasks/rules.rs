//! The rules that move tasks between states, as `State` methods (submit, with
//! idempotency keys, dependencies and eviction, is in `submit`): claim, heartbeat, complete, fail
//! (retries with backoff, the dead-letter state), cancel, retry; a lease lost to a
//! session end; terminal-task retention.
//!
//! Terminal tasks are not kept forever: each is removed
//! [`Replicated::TASK_RETENTION_MS`] of cluster time after it became terminal (at most
//! [`Replicated::TASK_GC_BATCH`] per advance of time), and a submit that would exceed
//! [`Replicated::MAX_TASKS`] evicts the oldest terminal task first. Removing a terminal
//! task strands nothing: its dependents were resolved when it became terminal (see
//! `remove_expired_tasks`). Must not depend on storage, Raft or clocks.

use super::{Task, TaskCommand, TaskError, TaskId, TaskState};
use crate::limits::Replicated;
use crate::sm::command::Outcome;
use crate::sm::events::EventBody;
use crate::sm::sessions::session_not_found;
use crate::sm::sessions::SessionId;
use crate::sm::State;
use crate::sm::{Refusal, TaskOutcome};

/// Retry backoff after the `attempts`-th attempt failed: doubling from the base, capped.
pub fn retry_backoff_ms(attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(20);
    (Replicated::TASK_RETRY_BACKOFF_BASE_MS << doublings).min(Replicated::TASK_RETRY_BACKOFF_MAX_MS)
}

pub(super) fn task_not_found(task_id: TaskId) -> Outcome {
    Outcome::Task(TaskOutcome::NotFound { task_id })
}

/// The replicated task limits in force: [`Replicated`]'s, or in tests the ones a test
/// set for its thread with `task_limits::with` (so a test can fill the store or
/// outlive retention without a million tasks or a day of cluster time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::sm) struct TaskLimits {
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

    pub(in crate::sm) fn current() -> Self {
        #[cfg(test)]
        if let Some(limits) = super::test_switches::task_limits::get() {
            return limits;
        }
        Self::REPLICATED
    }
}

impl State {
    /// Applies one task command at command index `index`.
    pub(in crate::sm) fn apply_task(&mut self, command: &TaskCommand, index: u64) -> Outcome {
        match command {
            TaskCommand::Submit(new) => self.submit_task(new, index),
            TaskCommand::Claim { session_id } => self.claim_task(*session_id),
            TaskCommand::Heartbeat {
                task_id,
                fencing_token,
                progress_json,
            } => self.heartbeat_task(*task_id, *fencing_token, progress_json),
            TaskCommand::Complete {
                task_id,
                fencing_token,
                result_json,
            } => self.complete_task(*task_id, *fencing_token, result_json),
            TaskCommand::Fail {
                task_id,
                fencing_token,
                error,
                retryable,
            } => self.fail_task(*task_id, *fencing_token, error, *retryable),
            TaskCommand::Cancel { task_id } => self.cancel(*task_id),
            TaskCommand::Retry { task_id } => self.retry_task(*task_id),
            TaskCommand::FinishAndClaim { finish } => self.finish_and_claim(finish, index),
        }
    }

    /// Applies `finish` (a complete or fail); if it was applied, assigns what the
    /// freed capacity allows and claims the holder's next task.
    fn finish_and_claim(&mut self, finish: &TaskCommand, index: u64) -> Outcome {
        let (TaskCommand::Complete {
            task_id,
            fencing_token,
            ..
        }
        | TaskCommand::Fail {
            task_id,
            fencing_token,
            ..
        }) = finish
        else {
            return Outcome::Refused(Refusal::InvalidCommand {
                message: "claim_next follows only a complete or a fail".into(),
            });
        };
        if self.active_format() < 8 {
            return Outcome::Refused(Refusal::InvalidCommand {
                message: "claim_next needs the cluster at format 8".into(),
            });
        }
        let session_id = match self.check_lease(*task_id, *fencing_token) {
            Ok(task) => task.session_id,
            Err(refusal) => return refusal,
        };
        let finished = match self.apply_task(finish, index) {
            Outcome::Task(finished) => finished,
            other => return other,
        };
        self.assign_ready(index);
        let next = match session_id.map(|session_id| self.claim_task(session_id)) {
            Some(Outcome::Task(next)) => next,
            // The holder's session is gone (it cannot be while it holds a lease).
            _ => TaskOutcome::NoneAssigned,
        };
        Outcome::Task(TaskOutcome::Finished {
            finished: Box::new(finished),
            next: Box::new(next),
        })
    }

    /// The session-end hook: the ended session's assigned tasks lose their lease
    /// (the attempt counted) and go back to the queue or the dead-letter state.
    pub(in crate::sm) fn tasks_on_session_end(&mut self, session_id: SessionId, reason: &str) {
        for task_id in self.tasks.assigned_to(session_id) {
            self.lose_lease(task_id, reason);
        }
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
    pub(in crate::sm) fn remove_expired_tasks(&mut self, now_ms: u64) {
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

    /// A lease ended without success (expiry or session end): requeue, or dead-letter
    /// once `max_attempts` assignments have been used.
    pub(in crate::sm) fn lose_lease(&mut self, task_id: TaskId, reason: &str) {
        let now = self.cluster_time_ms;
        let facts = self.task_facts(task_id);
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
        let dead = out_of_attempts == Some(true);
        if let Some((kind, session_id, attempt)) = facts {
            let reason = reason.to_owned();
            self.emit(match dead {
                true => EventBody::TaskDead {
                    task_id,
                    kind,
                    session_id,
                    attempt,
                    reason,
                },
                false => EventBody::TaskRetrying {
                    task_id,
                    kind,
                    session_id,
                    attempt,
                    reason,
                },
            });
        }
        if dead {
            self.dead_letter(task_id);
        } else {
            self.tasks
                .update(task_id, |task| task.state = TaskState::Queued);
        }
    }

    /// A task's kind, holder and attempt count, for its events (taken before a
    /// change that detaches it from its session).
    fn task_facts(&self, task_id: TaskId) -> Option<(String, Option<SessionId>, u32)> {
        let task = self.tasks.get(task_id)?;
        Some((task.spec.kind.clone(), task.session_id, task.attempts))
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

    pub(in crate::sm) fn cancel_task(&mut self, task_id: TaskId) {
        let now = self.cluster_time_ms;
        let facts = self.task_facts(task_id);
        let assigned = self
            .tasks
            .get(task_id)
            .is_some_and(|task| task.state == TaskState::Assigned);
        if assigned {
            self.release(task_id);
        }
        if let Some((kind, session_id, _)) = facts {
            // The worker holding it hears of it on its session's stream.
            if let (true, Some(session_id)) = (assigned, session_id) {
                self.emit(EventBody::TaskCancelRequested {
                    task_id,
                    kind: kind.clone(),
                    session_id,
                });
            }
            self.emit(EventBody::TaskCancelled {
                task_id,
                kind,
                session_id,
            });
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
            return Err(Outcome::Refused(Refusal::StaleFencingToken {
                current: task.fencing_token,
            }));
        }
        if task.state != TaskState::Assigned {
            return Err(Outcome::Refused(Refusal::WrongState {
                message: format!("task {task_id} is {}", task.state.name()),
            }));
        }
        Ok(task)
    }

    fn claim_task(&mut self, session_id: SessionId) -> Outcome {
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
            return Outcome::Task(TaskOutcome::NoneAssigned);
        };
        let (fencing_token, lease_expires_at_ms, _) = self.lease_task(task_id, false, &None);
        if let Some((kind, _, attempt)) = self.task_facts(task_id) {
            self.emit(EventBody::TaskClaimed {
                task_id,
                kind,
                session_id,
                fencing_token,
                attempt,
            });
        }
        Outcome::Task(TaskOutcome::Claimed {
            task_id,
            fencing_token,
            lease_expires_at_ms,
        })
    }

    /// Leases existing task `task_id` to its holder for `lease_ms` from now (a
    /// renewal that `keeps_longer` never shortens it) and records `progress` if
    /// given; returns its fencing token, lease end and whether cancel was requested.
    fn lease_task(
        &mut self,
        task_id: TaskId,
        keeps_longer: bool,
        progress: &Option<String>,
    ) -> (u64, u64, bool) {
        let now = self.cluster_time_ms;
        let leased = self.tasks.update(task_id, |task| {
            let until = now.saturating_add(task.spec.lease_ms);
            task.claimed = true;
            task.lease_expires_at_ms = match keeps_longer {
                true => task.lease_expires_at_ms.max(until),
                false => until,
            };
            task.timer_ms = Some(task.lease_expires_at_ms);
            if progress.is_some() {
                task.progress_json = progress.clone();
            }
            task.updated_at_ms = now;
            (
                task.fencing_token,
                task.lease_expires_at_ms,
                task.cancel_requested,
            )
        });
        leased.expect("task exists")
    }

    fn heartbeat_task(
        &mut self,
        task_id: TaskId,
        fencing_token: u64,
        progress: &Option<String>,
    ) -> Outcome {
        // A cancelled task tells its last holder so, instead of a bare refusal.
        if let Some(task) = self.tasks.get(task_id) {
            if task.state == TaskState::Cancelled && task.fencing_token == fencing_token {
                return Outcome::Task(TaskOutcome::LeaseExtended {
                    lease_expires_at_ms: 0,
                    cancel_requested: true,
                });
            }
        }
        if let Err(refusal) = self.check_lease(task_id, fencing_token) {
            return refusal;
        }
        let (_, lease_expires_at_ms, cancel_requested) = self.lease_task(task_id, true, progress);
        Outcome::Task(TaskOutcome::LeaseExtended {
            lease_expires_at_ms,
            cancel_requested,
        })
    }

    fn complete_task(&mut self, task_id: TaskId, fencing_token: u64, result_json: &str) -> Outcome {
        if let Err(refusal) = self.check_lease(task_id, fencing_token) {
            return refusal;
        }
        let now = self.cluster_time_ms;
        if let Some((kind, session_id, _)) = self.task_facts(task_id) {
            self.emit(EventBody::TaskSucceeded {
                task_id,
                kind,
                session_id,
            });
        }
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
        Outcome::Task(TaskOutcome::Updated {
            task_id,
            state: TaskState::Succeeded,
        })
    }

    fn fail_task(
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
        let facts = self.task_facts(task_id);
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
        let retry_at = retry_at.flatten();
        if let Some((kind, session_id, attempt)) = facts {
            self.emit(match retry_at {
                Some(_) => EventBody::TaskFailed {
                    task_id,
                    kind,
                    session_id,
                    attempt,
                },
                None => EventBody::TaskDead {
                    task_id,
                    kind,
                    session_id,
                    attempt,
                    reason: "failed".into(),
                },
            });
        }
        match retry_at {
            Some(at) => {
                self.tasks.update(task_id, |task| {
                    task.state = TaskState::Failed;
                    task.not_before_ms = at;
                    task.timer_ms = Some(at);
                });
                Outcome::Task(TaskOutcome::Updated {
                    task_id,
                    state: TaskState::Failed,
                })
            }
            None => {
                self.dead_letter(task_id);
                Outcome::Task(TaskOutcome::Updated {
                    task_id,
                    state: TaskState::Dead,
                })
            }
        }
    }

    pub(in crate::sm) fn cancel(&mut self, task_id: TaskId) -> Outcome {
        match self.tasks.get(task_id) {
            None => task_not_found(task_id),
            Some(task) if task.state.is_terminal() => Outcome::Refused(Refusal::WrongState {
                message: format!("task {task_id} is already {}", task.state.name()),
            }),
            Some(_) => {
                self.cancel_task(task_id);
                Outcome::Task(TaskOutcome::Updated {
                    task_id,
                    state: TaskState::Cancelled,
                })
            }
        }
    }

    fn retry_task(&mut self, task_id: TaskId) -> Outcome {
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
                if let Some((kind, _, attempt)) = self.task_facts(task_id) {
                    self.emit(EventBody::TaskRetrying {
                        task_id,
                        kind,
                        session_id: None,
                        attempt,
                        reason: "retried".into(),
                    });
                }
                Outcome::Task(TaskOutcome::Updated { task_id, state })
            }
            Some(state) => Outcome::Refused(Refusal::WrongState {
                message: format!("only a dead task can be retried; it is {}", state.name()),
            }),
        }
    }
}
