//! Submitting a task, as `State` methods: the checks a submit must pass (also run
//! by a transaction before it applies any op: `sm::txn`), idempotency keys,
//! dependencies (which must exist, so a new task never closes a cycle) and making
//! room by evicting the oldest terminal task at `Replicated::MAX_TASKS`. The rest of
//! a task's life is `rules`. Must not depend on storage, Raft or clocks.

use std::collections::BTreeSet;

use super::rules::{task_not_found, TaskLimits};
use super::{NewTask, Task, TaskId, TaskState};
use crate::sm::command::Outcome;
use crate::sm::events::EventBody;
use crate::sm::State;
use crate::sm::{Refusal, TaskOutcome};

impl State {
    /// What `submit_task` would refuse of `new` in this state, if anything (a
    /// transaction checks its ops before applying any: `sm::txn`). A submit with a
    /// known idempotency key is never refused (it answers the existing task).
    pub(in crate::sm) fn submit_refusal(&self, new: &NewTask) -> Option<Outcome> {
        if new
            .idempotency_key
            .as_deref()
            .and_then(|key| self.tasks.by_idempotency_key(key))
            .is_some()
        {
            return None;
        }
        let unique: BTreeSet<TaskId> = new.depends_on.iter().copied().collect();
        if unique.len() != new.depends_on.len() {
            return Some(Outcome::Refused(Refusal::InvalidCommand {
                message: "depends_on lists a task twice".into(),
            }));
        }
        if let Some(missing) = new
            .depends_on
            .iter()
            .find(|id| self.tasks.get(**id).is_none())
        {
            return Some(task_not_found(*missing));
        }
        let max_tasks = TaskLimits::current().max_tasks;
        if self.tasks.len() >= max_tasks && self.tasks.oldest_terminal_except(&unique).is_none() {
            return Some(Outcome::Refused(Refusal::LimitReached {
                message: format!("at most {max_tasks} tasks, and none is terminal (to evict)"),
            }));
        }
        None
    }

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
            return Outcome::Task(TaskOutcome::Submitted {
                task_id: existing,
                state,
                existing: true,
            });
        }
        let unique: BTreeSet<TaskId> = new.depends_on.iter().copied().collect();
        if unique.len() != new.depends_on.len() {
            return Outcome::Refused(Refusal::InvalidCommand {
                message: "depends_on lists a task twice".into(),
            });
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
                    return Outcome::Refused(Refusal::LimitReached {
                        message: format!(
                            "at most {max_tasks} tasks, and none is terminal (to evict)"
                        ),
                    });
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
        self.emit(EventBody::TaskSubmitted {
            task_id: index,
            kind: new.kind.clone(),
            state: state.name(),
        });
        Outcome::Task(TaskOutcome::Submitted {
            task_id: index,
            state,
            existing: false,
        })
    }
}
