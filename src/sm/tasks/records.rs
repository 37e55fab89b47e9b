//! Tasks: the records and the indexes that make scheduling cheap.
//!
//! This module keeps the indexes consistent (`queued` order, the queued tasks of each
//! required-capability set and the head of each such queue, one timer per task,
//! per-session assignments, idempotency keys, terminal tasks by the time they became
//! terminal); the rules that move tasks between states, and when terminal tasks are
//! removed, live in `rules`, assignment in `scheduler`.
//!
//! The per-capability-set queues let assignment look only at the first queued task of
//! each capability set instead of walking the whole queue: every task behind a head
//! needs exactly what the head needs, so it cannot be placed while the head cannot.
//! They are derived from the records, not serialized: a decoded `Tasks` rebuilds
//! them, so the snapshot format is unchanged. The terminal-task index is derived the
//! same way.
//!
//! A terminal task's `updated_at_ms` is the cluster time it became terminal: every
//! transition into `succeeded`, `dead` or `cancelled` sets it (dead through the
//! failure or lost lease that set it in the same command), and nothing changes it
//! while the task stays terminal (the later updates of a terminal task, appending to
//! its `dependents` and resetting a dead task's attempts as `retry` moves it out of
//! the terminal states with a new time, leave it alone). So the index needs no new
//! field.
//!
//! The records and every index are persistent maps and sets (`imbl`, since #16): a
//! snapshot build clones the state under its lock, and their clone is a pointer copy
//! (a `BTreeMap`'s copy grows with its size: a million-key KV map took 0.12–1.22 s,
//! the node frozen meanwhile; docs/performance.md). They encode byte for byte as the `BTreeMap`s and `BTreeSet`s they
//! replaced (`records_tests`), so snapshots and logs of the previous release read
//! unchanged.

use std::collections::BTreeSet;

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use crate::sm::sessions::SessionId;

pub type TaskId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for `not_before_ms` or for dependencies to succeed.
    Pending,
    /// Ready; waiting for a capable session with room.
    Queued,
    /// Leased to a session under a fencing token.
    Assigned,
    Succeeded,
    /// A retryable failure, waiting out its backoff before it is queued again.
    Failed,
    /// Out of attempts (or failed for good): the dead-letter state.
    Dead,
    Cancelled,
}

impl TaskState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Assigned => "assigned",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Queued,
            Self::Assigned,
            Self::Succeeded,
            Self::Failed,
            Self::Dead,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|state| state.name() == name)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Dead | Self::Cancelled)
    }
}

/// Why an attempt ended without success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    pub attempt: u32,
    /// `failed`, `lease_expired` or `session_ended`.
    pub reason: String,
    pub error: String,
    pub at_ms: u64,
}

/// The fields a task is submitted with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    pub kind: String,
    pub payload_json: String,
    pub required_capabilities: BTreeSet<String>,
    pub priority: i32,
    pub max_attempts: u32,
    pub lease_ms: u64,
    /// Delay from submission before the task may run.
    pub not_before_ms: Option<u64>,
    pub depends_on: Vec<TaskId>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub spec: NewTask,
    pub state: TaskState,
    /// Assignments so far (an attempt is counted when the task is assigned).
    pub attempts: u32,
    /// Cluster time before which the task does not run (submission delay or backoff).
    pub not_before_ms: u64,
    pub session_id: Option<SessionId>,
    /// The command index of the current (or last) assignment.
    pub fencing_token: u64,
    pub lease_expires_at_ms: u64,
    pub claimed: bool,
    pub progress_json: Option<String>,
    pub cancel_requested: bool,
    pub result_json: Option<String>,
    pub errors: Vec<TaskError>,
    pub dependents: Vec<TaskId>,
    pub created_at_ms: u64,
    /// When the task last changed state or lease; for a terminal task, when it became
    /// terminal (never changed afterwards), which is what retention counts from.
    pub updated_at_ms: u64,
    /// When this task's timer fires (not_before, backoff or lease), if it has one.
    pub timer_ms: Option<u64>,
}

/// A queued task's place in assignment order: (-priority, id), so highest priority
/// first and FIFO within a priority.
pub type QueuePosition = (i64, TaskId);

/// Queued tasks grouped by required-capability set, and the first of each group.
/// Derived from the task records (never serialized); holds no empty queue, so two
/// equal sets of records always give equal indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CapabilityQueues {
    by_capabilities: OrdMap<BTreeSet<String>, OrdSet<QueuePosition>>,
    /// The first position of every queue in `by_capabilities`.
    heads: OrdSet<QueuePosition>,
}

impl CapabilityQueues {
    fn insert(&mut self, required: &BTreeSet<String>, position: QueuePosition) {
        if !self.by_capabilities.contains_key(required) {
            self.by_capabilities.insert(required.clone(), OrdSet::new());
        }
        let queue = self
            .by_capabilities
            .get_mut(required)
            .expect("inserted above");
        let old_head = queue.get_min().copied();
        queue.insert(position);
        if old_head.is_none_or(|head| position < head) {
            if let Some(head) = old_head {
                self.heads.remove(&head);
            }
            self.heads.insert(position);
        }
    }

    fn remove(&mut self, required: &BTreeSet<String>, position: QueuePosition) {
        let Some(queue) = self.by_capabilities.get_mut(required) else {
            return;
        };
        let was_head = queue.get_min() == Some(&position);
        if queue.remove(&position).is_none() {
            return;
        }
        if was_head {
            self.heads.remove(&position);
            if let Some(&next) = queue.get_min() {
                self.heads.insert(next);
            }
        }
        if queue.is_empty() {
            self.by_capabilities.remove(required);
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredTasks")]
pub struct Tasks {
    by_id: OrdMap<TaskId, Task>,
    /// (-priority, id) of queued tasks: highest priority first, FIFO within one.
    queued: OrdSet<QueuePosition>,
    /// (due_ms, id): the next timer first.
    timers: OrdSet<(u64, TaskId)>,
    /// Assigned tasks per session.
    by_session: OrdMap<SessionId, OrdSet<TaskId>>,
    by_idempotency_key: OrdMap<String, TaskId>,
    /// The same queued tasks as `queued`, per required-capability set (derived).
    #[serde(skip)]
    capability_queues: CapabilityQueues,
    /// (became terminal at = `updated_at_ms`, id) of every terminal task: the oldest
    /// first (derived).
    #[serde(skip)]
    terminal: OrdSet<(u64, TaskId)>,
}

/// [`Tasks`] as serialized: every field but the derived `capability_queues` and
/// `terminal`, in the same order, so decoding rebuilds those indexes from the records.
#[derive(Deserialize)]
struct StoredTasks {
    by_id: OrdMap<TaskId, Task>,
    queued: OrdSet<QueuePosition>,
    timers: OrdSet<(u64, TaskId)>,
    by_session: OrdMap<SessionId, OrdSet<TaskId>>,
    by_idempotency_key: OrdMap<String, TaskId>,
}

impl From<StoredTasks> for Tasks {
    fn from(stored: StoredTasks) -> Self {
        let mut capability_queues = CapabilityQueues::default();
        for &position in &stored.queued {
            if let Some(task) = stored.by_id.get(&position.1) {
                capability_queues.insert(&task.spec.required_capabilities, position);
            }
        }
        let terminal = stored
            .by_id
            .values()
            .filter(|task| task.state.is_terminal())
            .map(|task| (task.updated_at_ms, task.id))
            .collect();
        Self {
            by_id: stored.by_id,
            queued: stored.queued,
            timers: stored.timers,
            by_session: stored.by_session,
            by_idempotency_key: stored.by_idempotency_key,
            capability_queues,
            terminal,
        }
    }
}

impl Tasks {
    pub fn get(&self, id: TaskId) -> Option<&Task> {
        self.by_id.get(&id)
    }

    /// The states of `task`'s dependencies that are still kept (a removed one
    /// was terminal).
    pub fn dependency_states(&self, task: &Task) -> Vec<TaskState> {
        let kept = task.spec.depends_on.iter().filter_map(|d| self.get(*d));
        kept.map(|d| d.state).collect()
    }

    /// The capabilities task `id` requires of its worker.
    pub fn required_of(&self, id: TaskId) -> Option<&BTreeSet<String>> {
        self.get(id).map(|task| &task.spec.required_capabilities)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn range_from(&self, after: Option<TaskId>) -> impl Iterator<Item = &Task> {
        let start = after.map_or(0, |id| id.saturating_add(1));
        self.by_id.range(start..).map(|(_, task)| task)
    }

    pub fn by_idempotency_key(&self, key: &str) -> Option<TaskId> {
        self.by_idempotency_key.get(key).copied()
    }

    /// The next queued task after `cursor` in assignment order (priority, then id).
    pub fn next_queued(&self, cursor: Option<QueuePosition>) -> Option<QueuePosition> {
        use std::ops::Bound;
        let start = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        self.queued.range((start, Bound::Unbounded)).next().copied()
    }

    /// The next queued task after `cursor` in assignment order that is first in the
    /// queue of its required-capability set. Costs O(log) whatever the queue length.
    pub fn next_queue_head(&self, cursor: Option<QueuePosition>) -> Option<QueuePosition> {
        use std::ops::Bound;
        let start = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        self.capability_queues
            .heads
            .range((start, Bound::Unbounded))
            .next()
            .copied()
    }

    /// How many distinct required-capability sets the queued tasks have.
    pub fn queued_capability_sets(&self) -> usize {
        self.capability_queues.by_capabilities.len()
    }

    pub fn assigned_to(&self, session: SessionId) -> Vec<TaskId> {
        self.by_session
            .get(&session)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The earliest task timer due at or before `now_ms`.
    pub fn next_due(&self, now_ms: u64) -> Option<TaskId> {
        let &(at, id) = self.timers.get_min()?;
        (at <= now_ms).then_some(id)
    }

    pub fn next_timer_ms(&self) -> Option<u64> {
        self.timers.get_min().map(|&(at, _)| at)
    }

    /// (when it became terminal, id) of the terminal task that became terminal first
    /// (the lower id among equals).
    pub fn oldest_terminal(&self) -> Option<(u64, TaskId)> {
        self.terminal.get_min().copied()
    }

    /// The oldest terminal task (as [`Self::oldest_terminal`]) not in `except`.
    /// Looks at most `except.len() + 1` entries.
    pub fn oldest_terminal_except(&self, except: &BTreeSet<TaskId>) -> Option<TaskId> {
        self.terminal
            .iter()
            .map(|&(_, id)| id)
            .find(|id| !except.contains(id))
    }

    /// How many stored tasks are terminal.
    pub fn terminal_len(&self) -> usize {
        self.terminal.len()
    }

    pub fn insert(&mut self, task: Task) {
        if let Some(key) = &task.spec.idempotency_key {
            self.by_idempotency_key.insert(key.clone(), task.id);
        }
        self.index(task.id, &task);
        self.by_id.insert(task.id, task);
    }

    fn index(&mut self, id: TaskId, task: &Task) {
        if task.state == TaskState::Queued {
            let position = (-i64::from(task.spec.priority), id);
            self.queued.insert(position);
            self.capability_queues
                .insert(&task.spec.required_capabilities, position);
        }
        if let Some(at) = task.timer_ms {
            self.timers.insert((at, id));
        }
        if let (TaskState::Assigned, Some(session)) = (task.state, task.session_id) {
            self.by_session.entry(session).or_default().insert(id);
        }
        if task.state.is_terminal() {
            self.terminal.insert((task.updated_at_ms, id));
        }
    }

    fn unindex(&mut self, id: TaskId, task: &Task) {
        let position = (-i64::from(task.spec.priority), id);
        if self.queued.remove(&position).is_some() {
            self.capability_queues
                .remove(&task.spec.required_capabilities, position);
        }
        if let Some(at) = task.timer_ms {
            self.timers.remove(&(at, id));
        }
        if let Some(session) = task.session_id {
            if let Some(ids) = self.by_session.get_mut(&session) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_session.remove(&session);
                }
            }
        }
        if task.state.is_terminal() {
            self.terminal.remove(&(task.updated_at_ms, id));
        }
    }

    /// Changes a task through `change`, keeping every index consistent.
    pub fn update<R>(&mut self, id: TaskId, change: impl FnOnce(&mut Task) -> R) -> Option<R> {
        let mut task = self.by_id.remove(&id)?;
        self.unindex(id, &task);
        let result = change(&mut task);
        self.index(id, &task);
        self.by_id.insert(id, task);
        Some(result)
    }

    /// Removes a task and every index entry of it, its idempotency key included (a
    /// later submit with that key creates a new task). Other tasks' `dependents` and
    /// `depends_on` may still name it: every reader of those lists treats a missing
    /// id as nothing to do (see `scheduler`).
    pub fn remove(&mut self, id: TaskId) -> Option<Task> {
        let task = self.by_id.remove(&id)?;
        self.unindex(id, &task);
        if let Some(key) = &task.spec.idempotency_key {
            if self.by_idempotency_key.get(key) == Some(&id) {
                self.by_idempotency_key.remove(key);
            }
        }
        Some(task)
    }

    /// Panics unless every index matches what the task records alone would give:
    /// each queued task in `queued` and in exactly one capability-set queue (its own),
    /// the heads exactly the first of each non-empty queue, timers, assignments,
    /// idempotency keys, and exactly the terminal tasks in `terminal`.
    #[cfg(test)]
    pub fn assert_indexes_consistent(&self) {
        let mut rebuilt = Tasks::default();
        for task in self.by_id.values() {
            rebuilt.insert(task.clone());
        }
        // A key maps to the one stored task submitted with it (a key is forgotten
        // only with its task), so the key map is derivable too.
        assert_eq!(self, &rebuilt, "task indexes match the records");
        let terminal: OrdSet<(u64, TaskId)> = self
            .by_id
            .values()
            .filter(|task| task.state.is_terminal())
            .map(|task| (task.updated_at_ms, task.id))
            .collect();
        assert_eq!(terminal, self.terminal, "terminal holds the terminal tasks");
        let queues = &self.capability_queues;
        let mut seen = OrdSet::new();
        for (required, queue) in &queues.by_capabilities {
            assert!(!queue.is_empty(), "no empty queue is kept");
            for position in queue {
                let first = seen.insert(*position).is_none();
                assert!(first, "{position:?} in two queues");
                let task = &self.by_id[&position.1];
                assert_eq!(&task.spec.required_capabilities, required);
                assert_eq!(task.state, TaskState::Queued);
            }
        }
        assert_eq!(
            seen, self.queued,
            "the queues hold exactly the queued tasks"
        );
        let heads: OrdSet<QueuePosition> = queues
            .by_capabilities
            .values()
            .filter_map(|queue| queue.get_min().copied())
            .collect();
        assert_eq!(heads, queues.heads, "heads are the first of each queue");
    }
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
