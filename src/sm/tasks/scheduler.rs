//! Assignment: which session a ready task goes to, by capability and load.
//!
//! Only the head of each required-capability queue is examined, and sessions are
//! found through their capability-profile index, so an assignment pass costs the
//! same with 1,000 or 900,000 stored tasks. A full-scan reference (test-only)
//! checks the indexed rule. Every decision is a function of replicated state, so
//! every replica makes the same one. Must not depend on storage, Raft or clocks.

#[cfg(test)]
use std::collections::BTreeSet;

#[cfg(test)]
use super::{count_assignment_work, reference, work};
use crate::sm::sessions::SessionId;
use crate::sm::tasks::{TaskId, TaskState};
use crate::sm::State;

impl State {
    /// Moves a pending task on: cancelled if a dependency failed, queued if all
    /// succeeded and `not_before` passed, else pending (with a timer for not_before).
    /// A dependency that was removed is skipped: it can only have succeeded (a dead or
    /// cancelled one cancelled this task when it became terminal, or in its submit).
    pub(in crate::sm) fn make_ready_or_wait(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get(id) else {
            return;
        };
        let dependency_states = self.tasks.dependency_states(task);
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
    pub(in crate::sm) fn assign_ready(&mut self, index: u64) {
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
            let Some(required) = self.tasks.required_of(task_id) else {
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
            let Some(required) = self.tasks.required_of(task_id) else {
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
        if let Some(task) = self.tasks.get(task_id) {
            let body = crate::sm::events::EventBody::TaskAssigned {
                task_id,
                kind: task.spec.kind.clone(),
                session_id,
                fencing_token: index,
                attempt: task.attempts,
            };
            self.emit(body);
        }
    }

    /// Detaches an assigned task from its session, freeing the session's capacity.
    pub(in crate::sm) fn release(&mut self, task_id: TaskId) {
        let session_id = self.tasks.update(task_id, |task| {
            task.timer_ms = None;
            task.claimed = false;
            task.session_id.take()
        });
        if let Some(session_id) = session_id.flatten() {
            self.sessions.change_load(session_id, -1);
        }
    }
}
