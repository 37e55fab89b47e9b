//! The deterministic state machine: a pure function of (state, batch).
//!
//! Owns the coordination state and the rules that change it. It does no IO, reads no
//! clock or RNG and iterates no `HashMap`: time arrives inside each [`Batch`], stamped
//! by the leader, and cluster time never goes backwards. Applying the same batches to
//! the same state yields the same bytes on every replica (tested), which is what
//! lets Raft replicate it. Refusals (a failed compare-and-set, a stale fencing token)
//! are [`Outcome`]s, not errors. Storage and Raft live in `store`; this module must
//! not depend on them.
//!
//! Each batch first advances cluster time and applies everything that became due
//! (session expiry, task leases, backoffs, `not_before`), then applies its commands
//! in order; after any command that can free capacity or ready a task, queued tasks
//! are assigned in the same step.

pub mod barriers;
pub mod command;
pub mod elections;
pub mod events;
pub mod format;
pub mod kv;
pub mod locks;
pub mod parties;
pub mod proposals;
pub mod requests;
pub mod retention;
#[cfg(test)]
mod retention_tests;
pub mod semaphores;
pub mod sessions;
pub mod tasks;
pub mod time;
pub mod twophase;
pub mod txn;
pub mod wait_queue;

pub use barriers::BarrierOutcome;
pub use command::{
    Applied, Batch, BatchResponse, Command, Guard, GuardKind, Outcome, Refusal, Submission,
};
pub use elections::ElectionOutcome;
use kv::KvMap;
pub use kv::KvOutcome;
pub use locks::LockOutcome;
pub use proposals::ProposalOutcome;
use requests::RequestTable;
pub use semaphores::SemaphoreOutcome;
pub use sessions::SessionOutcome;
use sessions::{SessionId, Sessions};
pub use tasks::TaskOutcome;
use tasks::Tasks;
pub use twophase::TwoPhaseOutcome;
pub use txn::TxnOutcome;

/// All replicated coordination state. Its byte layout, per format version, is in
/// `format`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Cluster time: the largest leader timestamp applied so far, ms since the epoch.
    pub cluster_time_ms: u64,
    /// The command index of the last applied command (0 before any).
    pub last_command_index: u64,
    pub kv: KvMap,
    pub requests: RequestTable,
    pub sessions: Sessions,
    pub tasks: Tasks,
    pub locks: locks::Locks,
    /// The last fencing token granted by any lock, semaphore or election: tokens are
    /// allocated from this one counter, so they strictly increase cluster-wide and a
    /// token is never handed out twice.
    pub last_fencing_token: u64,
    /// (until_ms, lock name) of locks held back by lock-delay.
    pub lock_delays: std::collections::BTreeSet<(u64, String)>,
    pub semaphores: semaphores::Semaphores,
    pub barriers: barriers::Barriers,
    pub elections: elections::Elections,
    pub proposals: proposals::Proposals,
    pub two_phase: twophase::TwoPhase,
    /// The format the cluster upgraded this state to (`Command::Upgrade`); 0 before
    /// any upgrade, which means the previous format ([`format::LEGACY`]).
    pub format: u32,
    /// Semaphores, barriers and elections nobody uses, and since when (`retention`).
    pub idle: retention::Idle,
    /// The events of the entry being applied (`events`): not state, never stored.
    pub events: events::Events,
}

impl State {
    /// Records that the command being applied changed `body`.
    pub(in crate::sm) fn emit(&mut self, body: events::EventBody) {
        self.events.push(self.last_command_index, body);
    }

    /// The events applied since the last call, in order (see `events`).
    pub fn take_events(&mut self) -> Vec<events::Event> {
        self.events.take()
    }

    /// Applies a Raft membership entry: it takes a command index of its own, so the
    /// event stream has a place for it (`membership.changed`).
    pub fn apply_membership(&mut self, voters: Vec<u64>, learners: Vec<u64>) {
        self.last_command_index += 1;
        self.emit(events::EventBody::MembershipChanged { voters, learners });
    }

    /// Applies one log entry's batch and returns one [`Applied`] per submission.
    pub fn apply_batch(&mut self, batch: &Batch) -> BatchResponse {
        self.cluster_time_ms = self.cluster_time_ms.max(batch.leader_time_ms);
        self.requests.expire(self.cluster_time_ms);
        // Keepalives the leader accepted before this entry's time count before
        // anything expires at it (a renewal is never lost to its own tick's time).
        for submission in &batch.submissions {
            if let Command::Tick { renewals } = &submission.command {
                for (session, at_ms) in renewals {
                    self.sessions
                        .renew(*session, (*at_ms).min(self.cluster_time_ms));
                }
            }
        }
        let due = self
            .next_due_ms()
            .is_some_and(|at| at <= self.cluster_time_ms);
        if due {
            // Time-driven changes take an index of their own, so every grant or
            // assignment they make has a fresh fencing token.
            self.last_command_index += 1;
            let index = self.last_command_index;
            self.advance_time();
            self.assign_ready(index);
        }
        let results = batch
            .submissions
            .iter()
            .map(|submission| self.apply_submission(submission))
            .collect();
        BatchResponse { results }
    }

    fn apply_submission(&mut self, submission: &Submission) -> Applied {
        if let Command::Upgrade { format } = submission.command {
            // Not a client command: no index, no request id, no event.
            self.upgrade(format);
            return Applied {
                index: self.last_command_index,
                outcome: Outcome::Upgraded {
                    format: self.active_format(),
                },
            };
        }
        let fingerprint = submission
            .request_id
            .as_ref()
            .map(|_| requests::fingerprint(&submission.command, &submission.guard));
        if let Some(record) = submission
            .request_id
            .as_deref()
            .and_then(|id| self.requests.get(id))
        {
            if Some(record.fingerprint) != fingerprint {
                return Applied {
                    index: record.applied.index,
                    outcome: Outcome::Refused(Refusal::RequestIdConflict),
                };
            }
            return record.applied.clone();
        }
        self.last_command_index += 1;
        let index = self.last_command_index;
        let refusal = self
            .owner_refusal(submission)
            .or_else(|| self.party_refusal(submission))
            .or_else(|| self.guard_refusal(submission.guard.as_ref()));
        let outcome = match refusal {
            Some(refusal) => refusal,
            None => self.apply_command(&submission.command, index),
        };
        if may_free_capacity_or_ready_work(&submission.command) {
            self.assign_ready(index);
        }
        // Report a task's state as the command left it (after any assignment it caused).
        let outcome = self.as_left(outcome);
        let applied = Applied { index, outcome };
        // A capacity refusal is transient: a retry with the same id must try again.
        // Another subject's use of a session is not recorded either, so it cannot
        // take the owner's request id.
        let transient = matches!(
            applied.outcome,
            Outcome::Refused(
                Refusal::LimitReached { .. }
                    | Refusal::NotSessionOwner { .. }
                    | Refusal::NotTheParty { .. }
            )
        );
        if let (Some(request_id), Some(fingerprint), false) =
            (&submission.request_id, fingerprint, transient)
        {
            self.requests.insert(
                request_id.clone(),
                applied.clone(),
                fingerprint,
                self.cluster_time_ms,
            );
        }
        applied
    }

    fn apply_command(&mut self, command: &Command, index: u64) -> Outcome {
        match command {
            Command::Kv(command) => self.apply_kv(command, index),
            Command::Session(command) => self.apply_session(command, index),
            Command::Tick { renewals } => {
                let renewed = renewals
                    .iter()
                    .filter(|(id, at)| {
                        matches!(
                            self.renew_session(*id, *at),
                            Outcome::Session(SessionOutcome::Renewed { .. })
                        )
                    })
                    .count();
                Outcome::Session(SessionOutcome::Ticked {
                    renewed: renewed as u32,
                })
            }
            Command::Task(command) => self.apply_task(command, index),
            Command::Lock(command) => self.apply_lock(command, index),
            Command::Semaphore(command) => self.apply_semaphore(command, index),
            Command::Barrier(command) => {
                let outcome = self.apply_barrier(command);
                self.note_use(sessions::Room::Barrier, command.name());
                outcome
            }
            Command::Election(command) => self.apply_election(command, index),
            Command::Proposal(command) => self.apply_proposal(command, index),
            Command::TwoPhase(command) => self.apply_two_phase(command, index),
            Command::Txn(command) => self.apply_txn(command, index),
            // Applied before a command index is taken (`apply_submission`); inside a
            // transaction it is refused by the transaction's own checks.
            Command::Upgrade { .. } => Outcome::Refused(Refusal::InvalidCommand {
                message: "an upgrade is not a client command".into(),
            }),
        }
    }

    /// `Some(refusal)` if the submission acts for a session whose owner is not the
    /// subject it acts as (`Submission::acting_as`).
    /// A task outcome with the task's state as the command left it (after any
    /// assignment it caused); a transaction's results likewise.
    fn as_left(&self, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Task(TaskOutcome::Submitted {
                task_id, existing, ..
            }) => Outcome::Task(TaskOutcome::Submitted {
                task_id,
                existing,
                state: self
                    .tasks
                    .get(task_id)
                    .map_or(tasks::TaskState::Cancelled, |task| task.state),
            }),
            Outcome::Task(TaskOutcome::Updated { task_id, state }) => {
                Outcome::Task(TaskOutcome::Updated {
                    task_id,
                    state: self.tasks.get(task_id).map_or(state, |task| task.state),
                })
            }
            Outcome::Task(TaskOutcome::Finished { finished, next }) => {
                let finished = match *finished {
                    TaskOutcome::Updated { task_id, state } => TaskOutcome::Updated {
                        task_id,
                        state: self.tasks.get(task_id).map_or(state, |task| task.state),
                    },
                    other => other,
                };
                Outcome::Task(TaskOutcome::Finished {
                    finished: Box::new(finished),
                    next,
                })
            }
            Outcome::Txn(TxnOutcome::Applied { succeeded, results }) => {
                Outcome::Txn(TxnOutcome::Applied {
                    succeeded,
                    results: results.into_iter().map(|r| self.as_left(r)).collect(),
                })
            }
            other => other,
        }
    }

    fn owner_refusal(&self, submission: &Submission) -> Option<Outcome> {
        let subject = submission.acting_as.as_deref()?;
        let refusal = |command: &Command| {
            let session_id = self.session_acted_for(command)?;
            let owner = self.sessions.get(session_id)?.owner.as_deref()?;
            (owner != subject).then_some(Outcome::Refused(Refusal::NotSessionOwner { session_id }))
        };
        match &submission.command {
            // A transaction acts for every session its ops (of either branch) name.
            Command::Txn(txn) => txn.success.iter().chain(&txn.failure).find_map(refusal),
            command => refusal(command),
        }
    }

    /// The session a command acts for: the one it names, or for a task's
    /// heartbeat, completion or failure the session the task is assigned to.
    /// Withdrawals of waiters are the node's own commands and name none.
    fn session_acted_for(&self, command: &Command) -> Option<SessionId> {
        use barriers::BarrierCommand as B;
        use elections::ElectionCommand as E;
        use locks::LockCommand as L;
        use semaphores::SemaphoreCommand as S;
        use sessions::SessionCommand as Se;
        use tasks::TaskCommand as T;
        match command {
            Command::Kv(kv::KvCommand::Put { session_id, .. }) => *session_id,
            Command::Kv(kv::KvCommand::Delete { .. })
            | Command::Tick { .. }
            | Command::Upgrade { .. } => None,
            Command::Session(Se::Keepalive { session_id } | Se::End { session_id }) => {
                Some(*session_id)
            }
            Command::Session(Se::Create(_)) => None,
            Command::Task(T::Claim { session_id }) => Some(*session_id),
            Command::Task(
                T::Heartbeat { task_id, .. }
                | T::Complete { task_id, .. }
                | T::Fail { task_id, .. },
            ) => self.tasks.get(*task_id).and_then(|task| task.session_id),
            Command::Task(T::FinishAndClaim { finish }) => match finish.as_ref() {
                T::Complete { task_id, .. } | T::Fail { task_id, .. } => {
                    self.tasks.get(*task_id).and_then(|task| task.session_id)
                }
                _ => None,
            },
            Command::Task(T::Submit(_) | T::Cancel { .. } | T::Retry { .. }) => None,
            Command::Lock(L::Acquire { session_id, .. } | L::Release { session_id, .. })
            | Command::Semaphore(S::Acquire { session_id, .. } | S::Release { session_id, .. })
            | Command::Barrier(B::Wait { session_id, .. } | B::Leave { session_id, .. })
            | Command::Election(E::Campaign { session_id, .. } | E::Resign { session_id, .. }) => {
                Some(*session_id)
            }
            Command::Proposal(proposals::ProposalCommand::Vote {
                proposal_id, voter, ..
            }) => self
                .proposals
                .get(*proposal_id)
                .filter(|p| p.voters_are_sessions)
                .and_then(|_| voter.parse().ok()),
            Command::TwoPhase(
                twophase::TwoPhaseCommand::Vote {
                    id, participant, ..
                }
                | twophase::TwoPhaseCommand::Ack { id, participant },
            ) => self
                .two_phase
                .get(*id)
                .filter(|t| t.participants_are_sessions)
                .and_then(|_| participant.parse().ok()),
            Command::Proposal(proposals::ProposalCommand::Create(_))
            | Command::TwoPhase(twophase::TwoPhaseCommand::Create(_))
            | Command::Txn(_) => None,
            Command::Lock(L::Withdraw { .. })
            | Command::Semaphore(S::Withdraw { .. })
            | Command::Election(E::Withdraw { .. }) => None,
        }
    }

    /// `Some(refusal)` if the submission votes or acks as a named (not session)
    /// voter or participant other than the subject it acts as: nobody casts
    /// another's vote (`admin` and open nodes are held to nothing). A name not on
    /// the list is left to the room (`not_a_voter`, `not_a_participant`).
    fn party_refusal(&self, submission: &Submission) -> Option<Outcome> {
        let subject = submission.acting_as.as_deref()?;
        let party = match &submission.command {
            Command::Proposal(proposals::ProposalCommand::Vote {
                proposal_id, voter, ..
            }) => {
                let proposal = self.proposals.get(*proposal_id)?;
                let listed = proposal.voters.contains(voter);
                (!proposal.voters_are_sessions && listed).then_some(voter)?
            }
            Command::TwoPhase(
                twophase::TwoPhaseCommand::Vote {
                    id, participant, ..
                }
                | twophase::TwoPhaseCommand::Ack { id, participant },
            ) => {
                let transaction = self.two_phase.get(*id)?;
                let listed = transaction.participants.contains(participant);
                (!transaction.participants_are_sessions && listed).then_some(participant)?
            }
            _ => return None,
        };
        (party != subject).then(|| {
            Outcome::Refused(Refusal::NotTheParty {
                party: party.clone(),
            })
        })
    }

    /// `Some(refusal)` unless the guard's token is current for its resource.
    fn guard_refusal(&self, guard: Option<&Guard>) -> Option<Outcome> {
        let guard = guard?;
        let current: Vec<u64> = match guard.kind {
            GuardKind::Lock => self
                .locks
                .get(&guard.name)
                .map(|l| l.holders.iter().map(|h| h.fencing_token).collect()),
            GuardKind::Semaphore => self
                .semaphores
                .get(&guard.name)
                .map(|s| s.holders.iter().map(|p| p.fencing_token).collect()),
            GuardKind::Election => self
                .elections
                .get(&guard.name)
                .and_then(|e| e.leader.as_ref())
                .map(|leader| vec![leader.term]),
        }
        .unwrap_or_default();
        (!current.contains(&guard.fencing_token)).then(|| {
            Outcome::Refused(Refusal::StaleFencingToken {
                current: current.iter().copied().max().unwrap_or(0),
            })
        })
    }
}

/// The next fencing token: the granting command's index, or one past the last
/// token if several grants share a command.
pub(crate) fn next_token(last: &mut u64, index: u64) -> u64 {
    *last = index.max(*last + 1);
    *last
}

fn may_free_capacity_or_ready_work(command: &Command) -> bool {
    match command {
        Command::Session(command) => command.may_free_capacity_or_ready_work(),
        Command::Task(command) => command.may_free_capacity_or_ready_work(),
        Command::Txn(txn) => txn
            .success
            .iter()
            .chain(&txn.failure)
            .any(may_free_capacity_or_ready_work),
        _ => false,
    }
}

/// The refusal of a command past a replicated count limit (429, not remembered).
pub(in crate::sm) fn too_many(what: &str, limit: usize) -> Outcome {
    Outcome::Refused(Refusal::LimitReached {
        message: format!("at most {limit} {what}"),
    })
}

#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod decode_fuzz_tests;
#[cfg(test)]
mod events_tests;
#[cfg(test)]
mod scheduler_scale_tests;
#[cfg(test)]
mod scheduler_tests;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
