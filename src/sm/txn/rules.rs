//! The rules of transactions as `State` methods: evaluate the comparisons, check
//! the branch's ops (distinct resources, allowed kinds, and what each room's rule
//! would refuse), then apply them through the rooms' own rules.

use std::collections::BTreeSet;

use super::{Compare, TxnCommand, TxnOutcome};
use crate::limits::Replicated;
use crate::sm::kv::KvCommand;
use crate::sm::locks::{LockCommand, LockOutcome};
use crate::sm::semaphores::{SemaphoreCommand, SemaphoreOutcome};
use crate::sm::tasks::{TaskCommand, TaskOutcome};
use crate::sm::wait_queue::{again, release_position, Again};
use crate::sm::{too_many, Command, KvOutcome, Outcome, Refusal, State};

/// What a branch adds to the replicated counts, so far in the check.
#[derive(Default)]
struct Added {
    keys: usize,
    locks: usize,
    semaphores: usize,
}

impl State {
    /// Applies one transaction at command index `index`.
    pub(in crate::sm) fn apply_txn(&mut self, txn: &TxnCommand, index: u64) -> Outcome {
        if let Err(message) = shape(txn) {
            return Outcome::Refused(Refusal::InvalidCommand { message });
        }
        let succeeded = txn.compare.iter().all(|compare| self.holds(compare));
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut added = Added::default();
        for (op_index, op) in branch.iter().enumerate() {
            if let Some(refusal) = self.op_refusal(op, &mut added) {
                return Outcome::Txn(TxnOutcome::OpRefused {
                    succeeded,
                    op_index,
                    refusal: Box::new(refusal),
                });
            }
        }
        let results = branch
            .iter()
            .map(|op| self.apply_command(op, index))
            .collect();
        Outcome::Txn(TxnOutcome::Applied { succeeded, results })
    }

    /// Whether one comparison holds in this state.
    fn holds(&self, compare: &Compare) -> bool {
        match compare {
            Compare::KeyVersion { key, version } => {
                self.kv.get(key).map_or(0, |entry| entry.version) == *version
            }
            Compare::KeyExists { key, exists } => self.kv.contains_key(key) == *exists,
            Compare::KeyValue { key, value_json } => self.kv.get(key).is_some_and(|entry| {
                let stored = serde_json::from_str::<serde_json::Value>(&entry.value_json);
                let given = serde_json::from_str::<serde_json::Value>(value_json);
                matches!((stored, given), (Ok(a), Ok(b)) if a == b)
            }),
            Compare::LockToken {
                lock,
                fencing_token,
            } => self.locks.get(lock).is_some_and(|lock| {
                lock.holders
                    .iter()
                    .any(|hold| hold.fencing_token == *fencing_token)
            }),
            Compare::ElectionTerm { election, term } => self
                .elections
                .get(election)
                .and_then(|election| election.leader.as_ref())
                .is_some_and(|leader| leader.term == *term),
            Compare::TaskState { task_id, state } => self
                .tasks
                .get(*task_id)
                .is_some_and(|task| task.state == *state),
        }
    }

    /// What the room's rule would answer `op` with if it refused it now, given what
    /// the branch's earlier ops add (`added`); `None` if it would apply.
    fn op_refusal(&self, op: &Command, added: &mut Added) -> Option<Outcome> {
        let session = |session_id: u64| {
            self.sessions
                .get(session_id)
                .is_none()
                .then_some(Outcome::Refused(Refusal::SessionNotFound { session_id }))
        };
        match op {
            Command::Kv(KvCommand::Put {
                key,
                if_version,
                session_id,
                ..
            }) => {
                if let Some(refusal) = session_id.and_then(session) {
                    return Some(refusal);
                }
                let current = self.kv.get(key).map_or(0, |entry| entry.version);
                if if_version.is_some_and(|version| version != current) {
                    return Some(Outcome::Kv(KvOutcome::CasMismatch {
                        current_version: current,
                    }));
                }
                if !self.kv.contains_key(key) {
                    added.keys += 1;
                    if self.kv.len() + added.keys > Replicated::MAX_KEYS {
                        return Some(too_many("keys", Replicated::MAX_KEYS));
                    }
                }
                None
            }
            Command::Kv(KvCommand::Delete { key, if_version }) => {
                let current = self.kv.get(key).map_or(0, |entry| entry.version);
                if_version
                    .is_some_and(|version| version != current)
                    .then_some(Outcome::Kv(KvOutcome::CasMismatch {
                        current_version: current,
                    }))
            }
            Command::Task(TaskCommand::Submit(new)) => self.submit_refusal(new),
            Command::Task(TaskCommand::Cancel { task_id }) => match self.tasks.get(*task_id) {
                None => Some(Outcome::Task(TaskOutcome::NotFound { task_id: *task_id })),
                Some(task) if task.state.is_terminal() => {
                    Some(Outcome::Refused(Refusal::WrongState {
                        message: format!("task {task_id} is already {}", task.state.name()),
                    }))
                }
                Some(_) => None,
            },
            Command::Lock(LockCommand::Acquire {
                name,
                session_id,
                mode,
                ..
            }) => {
                if let Some(refusal) = session(*session_id) {
                    return Some(refusal);
                }
                let Some(lock) = self.locks.get(name) else {
                    added.locks += 1;
                    let full = self.locks.len() + added.locks > Replicated::MAX_RESOURCES_PER_ROOM;
                    return full.then(|| too_many("locks", Replicated::MAX_RESOURCES_PER_ROOM));
                };
                let same = (
                    |h: &crate::sm::locks::Hold| h.mode == *mode,
                    |w: &crate::sm::locks::Waiter| w.mode == *mode,
                );
                match again(&lock.holders, &lock.waiters, *session_id, same) {
                    Some(Again::Granted(_)) => None,
                    Some(Again::HeldOtherwise(hold)) => {
                        Some(Outcome::Refused(Refusal::WrongState {
                            message: format!(
                                "session {session_id} holds {name:?} in {} mode",
                                hold.mode.name()
                            ),
                        }))
                    }
                    Some(Again::Queued(_)) => Some(Outcome::Lock(LockOutcome::Held)),
                    None => {
                        (!lock.grantable_now(*mode)).then_some(Outcome::Lock(LockOutcome::Held))
                    }
                }
            }
            Command::Lock(LockCommand::Release {
                name,
                session_id,
                fencing_token,
            }) => {
                let holders = self.locks.get(name).map_or(&[][..], |lock| &lock.holders);
                let not_held = || format!("session {session_id} does not hold {name:?}");
                release_position(holders, (*session_id, *fencing_token), not_held).err()
            }
            Command::Semaphore(SemaphoreCommand::Acquire {
                name,
                session_id,
                permits,
                limit,
                ..
            }) => {
                if let Some(refusal) = session(*session_id) {
                    return Some(refusal);
                }
                if *permits == 0 || permits > limit {
                    return Some(Outcome::Refused(Refusal::InvalidCommand {
                        message: format!("permits must be 1 to the limit ({limit})"),
                    }));
                }
                let Some(semaphore) = self.semaphores.get(name) else {
                    added.semaphores += 1;
                    let full = self.semaphores.len() + added.semaphores
                        > Replicated::MAX_RESOURCES_PER_ROOM;
                    return full
                        .then(|| too_many("semaphores", Replicated::MAX_RESOURCES_PER_ROOM));
                };
                let idle = semaphore.holders.is_empty() && semaphore.waiters.is_empty();
                let fixed = if idle && semaphore.limit == 0 {
                    *limit
                } else {
                    semaphore.limit
                };
                if fixed != *limit {
                    return Some(Outcome::Semaphore(SemaphoreOutcome::LimitMismatch {
                        limit: fixed,
                    }));
                }
                let same = (
                    |h: &crate::sm::semaphores::Permit| h.permits == *permits,
                    |w: &crate::sm::semaphores::PermitWaiter| w.permits == *permits,
                );
                match again(&semaphore.holders, &semaphore.waiters, *session_id, same) {
                    Some(Again::Granted(_)) => None,
                    Some(Again::HeldOtherwise(hold)) => {
                        Some(Outcome::Refused(Refusal::WrongState {
                            message: format!(
                                "session {session_id} already holds {} permits",
                                hold.permits
                            ),
                        }))
                    }
                    Some(Again::Queued(_)) => {
                        Some(Outcome::Semaphore(SemaphoreOutcome::Unavailable))
                    }
                    None => {
                        let free =
                            semaphore.waiters.is_empty() && semaphore.used() + permits <= *limit;
                        (!free).then_some(Outcome::Semaphore(SemaphoreOutcome::Unavailable))
                    }
                }
            }
            Command::Semaphore(SemaphoreCommand::Release {
                name,
                session_id,
                fencing_token,
            }) => {
                let holders = self.semaphores.get(name).map_or(&[][..], |s| &s.holders);
                let not_held = || format!("session {session_id} holds no permits of {name:?}");
                release_position(holders, (*session_id, *fencing_token), not_held).err()
            }
            _ => Some(Outcome::Refused(Refusal::InvalidCommand {
                message: "this operation cannot be part of a transaction".into(),
            })),
        }
    }
}

/// Whether an outcome of an op is a refusal: what would abort a transaction.
pub fn is_refusal(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Refused(_)
            | Outcome::Kv(KvOutcome::CasMismatch { .. })
            | Outcome::Task(TaskOutcome::NotFound { .. })
            | Outcome::Lock(
                LockOutcome::Held | LockOutcome::Deadlock { .. } | LockOutcome::Queued { .. }
            )
            | Outcome::Semaphore(
                SemaphoreOutcome::Unavailable
                    | SemaphoreOutcome::LimitMismatch { .. }
                    | SemaphoreOutcome::Queued { .. }
            )
    )
}

/// Checks what a transaction may hold: only the allowed kinds of op (acquires that
/// never wait, no lock-delay), at most one task submit (a task's id is its command's
/// index), and no two ops of a branch on the same resource.
pub fn shape(txn: &TxnCommand) -> Result<(), String> {
    for branch in [&txn.success, &txn.failure] {
        let mut touched = BTreeSet::new();
        let mut submits = 0;
        for (i, op) in branch.iter().enumerate() {
            let resources: Vec<String> = match op {
                Command::Kv(KvCommand::Put { key, .. } | KvCommand::Delete { key, .. }) => {
                    vec![format!("key {key:?}")]
                }
                Command::Task(TaskCommand::Submit(new)) => {
                    submits += 1;
                    new.depends_on
                        .iter()
                        .map(|id| format!("task {id}"))
                        .collect()
                }
                Command::Task(TaskCommand::Cancel { task_id }) => vec![format!("task {task_id}")],
                Command::Lock(LockCommand::Acquire {
                    name,
                    wait: false,
                    lock_delay_ms: 0,
                    previous_token: None,
                    ..
                })
                | Command::Lock(LockCommand::Release { name, .. }) => {
                    vec![format!("lock {name:?}")]
                }
                Command::Semaphore(
                    SemaphoreCommand::Acquire {
                        name, wait: false, ..
                    }
                    | SemaphoreCommand::Release { name, .. },
                ) => vec![format!("semaphore {name:?}")],
                _ => return Err(format!("op {i} cannot be part of a transaction")),
            };
            if submits > 1 {
                return Err("a transaction submits at most one task".into());
            }
            for resource in resources {
                if !touched.insert(resource.clone()) {
                    return Err(format!("op {i} touches {resource} again: each op of a branch needs a resource of its own"));
                }
            }
        }
    }
    Ok(())
}
