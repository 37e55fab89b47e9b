//! The property tests' runner: applies each generated batch whole, one submission at a
//! time and with the full-scan reference assignment, checks the scheduler invariants
//! after every command, and replays the batches for determinism.

use crate::sm::tasks::TaskCommand;
use std::collections::{BTreeMap, BTreeSet};

use super::properties::{capability_subset, Op, Target, Token};
use crate::codec;
use crate::sm::sessions::SessionId;
use crate::sm::tasks::{self as scheduler, TaskLimits};
use crate::sm::tasks::{NewTask, TaskId, TaskState};
use crate::sm::test_support::{
    cancel, claim, complete, create_session, end_session, fail, heartbeat, retry, submit,
    task_spec, updated,
};
use crate::sm::{Batch, Command, Outcome, State, Submission};
use crate::sm::{Refusal, SessionOutcome, TaskOutcome};

/// Runs generated operations against the state machine, checking the invariants after
/// every command. `whole` applies each batch as the log does; `stepwise` applies the
/// same batch as its time step and then one submission at a time, which is equivalent
/// here (no command makes anything due at once) and lets each command be observed.
pub(super) struct Run {
    whole: State,
    stepwise: State,
    /// The same batches applied with the full-scan reference assignment.
    reference: State,
    time_ms: u64,
    pending: Vec<Submission>,
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

    pub(super) fn execute(ops: &[(Op, bool)]) {
        let mut run = Self::new();
        for (op, ends_batch) in ops {
            if let Op::Advance(ms) = op {
                run.flush();
                run.time_ms += ms;
                run.apply(Vec::new());
                continue;
            }
            let command = run.resolve(op);
            run.pending.push(Submission {
                guard: None,
                acting_as: None,
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
            let submissions = std::mem::take(&mut self.pending);
            self.apply(submissions);
        }
    }

    fn apply(&mut self, submissions: Vec<Submission>) {
        let time_ms = self.time_ms;
        let single = |submissions| Batch {
            leader_time_ms: time_ms,
            submissions,
        };
        let batch = single(submissions);
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
        for (submission, expected) in batch.submissions.iter().zip(&response.results) {
            let before = self.stepwise.clone();
            let applied = self
                .stepwise
                .apply_batch(&single(vec![submission.clone()]))
                .results
                .remove(0);
            assert_eq!(&applied, expected, "one at a time, {submission:?}");
            self.record(&applied.outcome);
            self.check(&before, Some((&submission.command, &applied.outcome)));
        }
        assert!(
            self.whole == self.stepwise,
            "a batch applies as its submissions one at a time"
        );
        self.batches.push(batch);
    }

    fn record(&mut self, outcome: &Outcome) {
        match *outcome {
            Outcome::Session(SessionOutcome::Created { session_id, .. }) => {
                self.sessions.push(session_id)
            }
            Outcome::Task(TaskOutcome::Submitted {
                task_id,
                existing: false,
                ..
            }) => self.tasks.push(task_id),
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
            let dependencies = after.tasks.dependency_states(task);
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
                    Some((Command::Task(TaskCommand::Submit(new)), outcome)) => {
                        assert!(
                            matches!(
                                outcome,
                                Outcome::Task(TaskOutcome::Submitted {
                                    existing: false,
                                    ..
                                })
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
                let retried = matches!(command, Some((Command::Task(TaskCommand::Retry { task_id }), _)) if *task_id == old.id);
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
                    Command::Task(TaskCommand::Complete {
                        task_id,
                        fencing_token,
                        ..
                    }),
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
            if let Command::Task(TaskCommand::Heartbeat {
                task_id,
                fencing_token,
                ..
            })
            | Command::Task(TaskCommand::Complete {
                task_id,
                fencing_token,
                ..
            })
            | Command::Task(TaskCommand::Fail {
                task_id,
                fencing_token,
                ..
            }) = command
            {
                if let Some(task) = before.tasks.get(*task_id) {
                    if task.fencing_token != *fencing_token {
                        assert_eq!(
                            *outcome,
                            Outcome::Refused(Refusal::StaleFencingToken {
                                current: task.fencing_token
                            }),
                            "{command:?}"
                        );
                    }
                }
            }
            // A refusal changes nothing but the command index.
            let refused = matches!(
                outcome,
                Outcome::Refused(Refusal::StaleFencingToken { .. })
                    | Outcome::Refused(Refusal::WrongState { .. })
                    | Outcome::Task(TaskOutcome::NotFound { .. })
                    | Outcome::Refused(Refusal::SessionNotFound { .. })
                    | Outcome::Refused(Refusal::InvalidCommand { .. })
                    | Outcome::Refused(Refusal::LimitReached { .. })
                    | Outcome::Task(TaskOutcome::NoneAssigned)
                    | Outcome::Task(TaskOutcome::Submitted { existing: true, .. })
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
