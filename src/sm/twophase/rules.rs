//! The rules of two-phase commit as `State` methods: create, vote, ack, abort at
//! the timeout, and the session-end hook (a session participant that had not voted
//! aborts the transaction; its end also counts as its ack).

use super::{AbortReason, Ballot, Decision, NewTransaction, Transaction, TransactionId};
use super::{TwoPhaseCommand, TwoPhaseOutcome, TwoPhaseState};
use crate::limits::Replicated;
use crate::sm::events::EventBody;
use crate::sm::sessions::{Room, SessionId};
use crate::sm::too_many;
use crate::sm::{Outcome, State};

impl State {
    /// Applies one two-phase-commit command at command index `index`.
    pub(in crate::sm) fn apply_two_phase(
        &mut self,
        command: &TwoPhaseCommand,
        index: u64,
    ) -> Outcome {
        match command {
            TwoPhaseCommand::Create(new) => self.create_transaction(new, index),
            TwoPhaseCommand::Vote {
                id,
                participant,
                decision,
                cast_by,
            } => self.vote_transaction(*id, participant, *decision, cast_by.clone(), index),
            TwoPhaseCommand::Ack { id, participant } => self.ack_transaction(*id, participant),
        }
    }

    fn create_transaction(&mut self, new: &NewTransaction, index: u64) -> Outcome {
        let are_sessions = new.participants_are_sessions;
        let sessions = match self.party_sessions(&new.participants, are_sessions, "participant") {
            Ok(sessions) => sessions,
            Err(refusal) => return refusal,
        };
        if self.two_phase.len() >= Replicated::MAX_TWO_PHASE {
            return too_many(
                "two-phase transactions not yet acked by every participant",
                Replicated::MAX_TWO_PHASE,
            );
        }
        let now = self.cluster_time_ms;
        self.two_phase.insert(Transaction {
            id: index,
            participants: new.participants.clone(),
            participants_are_sessions: new.participants_are_sessions,
            payload_json: new.payload_json.clone(),
            votes: Default::default(),
            acks: Default::default(),
            created_at_ms: now,
            created_by: new.created_by.clone(),
            timeout_at_ms: now.saturating_add(new.timeout_ms),
            state: TwoPhaseState::Preparing,
            reason: None,
            decided_at_index: None,
        });
        self.emit(EventBody::TwoPhaseCreated { id: index });
        let name = index.to_string();
        for session_id in sessions {
            self.joined(session_id, Room::TwoPhase, &name);
        }
        Outcome::TwoPhase(TwoPhaseOutcome::Created { id: index })
    }

    fn vote_transaction(
        &mut self,
        id: TransactionId,
        participant: &str,
        decision: Decision,
        cast_by: Option<String>,
        index: u64,
    ) -> Outcome {
        let Some(transaction) = self.two_phase.get(id) else {
            return Outcome::TwoPhase(TwoPhaseOutcome::NotFound { id });
        };
        if !transaction.participants.iter().any(|p| p == participant) {
            return Outcome::TwoPhase(TwoPhaseOutcome::NotAParticipant {
                participant: participant.to_owned(),
            });
        }
        if let Some(ballot) = transaction.votes.get(participant) {
            return if ballot.decision == decision {
                voted(transaction)
            } else {
                Outcome::TwoPhase(TwoPhaseOutcome::AlreadyVoted {
                    decision: ballot.decision,
                })
            };
        }
        if transaction.state != TwoPhaseState::Preparing {
            return Outcome::TwoPhase(TwoPhaseOutcome::Decided {
                state: transaction.state,
            });
        }
        let transaction = self.two_phase.get_mut(id).expect("present");
        let ballot = Ballot {
            decision,
            index,
            cast_by,
        };
        transaction.votes.insert(participant.to_owned(), ballot);
        let all = transaction.votes.len() == transaction.participants.len();
        let state = match decision {
            Decision::Abort => {
                let reason = Some(AbortReason::Vote);
                self.decide_two_phase(id, TwoPhaseState::Aborted, reason, index);
                TwoPhaseState::Aborted
            }
            Decision::Commit if all => {
                self.decide_two_phase(id, TwoPhaseState::Committed, None, index);
                TwoPhaseState::Committed
            }
            Decision::Commit => TwoPhaseState::Preparing,
        };
        Outcome::TwoPhase(TwoPhaseOutcome::Voted { id, state })
    }

    fn ack_transaction(&mut self, id: TransactionId, participant: &str) -> Outcome {
        let Some(transaction) = self.two_phase.get(id) else {
            return Outcome::TwoPhase(TwoPhaseOutcome::NotFound { id });
        };
        if !transaction.participants.iter().any(|p| p == participant) {
            return Outcome::TwoPhase(TwoPhaseOutcome::NotAParticipant {
                participant: participant.to_owned(),
            });
        }
        let state = transaction.state;
        if state == TwoPhaseState::Preparing {
            return Outcome::TwoPhase(TwoPhaseOutcome::NotDecided);
        }
        let sessions = transaction.participants_are_sessions;
        let removed = self.two_phase.ack(id, participant);
        if sessions {
            if let Ok(session_id) = participant.parse::<SessionId>() {
                self.left(session_id, Room::TwoPhase, &id.to_string());
            }
        }
        Outcome::TwoPhase(TwoPhaseOutcome::Acked { id, state, removed })
    }

    /// Decides preparing transaction `id` and says so (`2pc.decided`).
    fn decide_two_phase(
        &mut self,
        id: TransactionId,
        state: TwoPhaseState,
        reason: Option<AbortReason>,
        index: u64,
    ) {
        if self.two_phase.decide(id, state, reason, index) {
            self.emit(EventBody::TwoPhaseDecided {
                id,
                state: state.name().to_owned(),
                reason: reason.map(|r| r.name().to_owned()),
            });
        }
    }

    /// Aborts preparing transactions whose timeout passed, at most
    /// [`Replicated::TWO_PHASE_TIMEOUT_BATCH`] per step.
    pub(in crate::sm) fn advance_two_phase(&mut self) {
        let (now, index) = (self.cluster_time_ms, self.last_command_index);
        for _ in 0..Replicated::TWO_PHASE_TIMEOUT_BATCH {
            let Some(id) = crate::sm::time::first_due(&self.two_phase.timeouts, now) else {
                break;
            };
            let reason = Some(AbortReason::Timeout);
            self.decide_two_phase(id, TwoPhaseState::Aborted, reason, index);
        }
    }

    /// The session-end hook: every transaction the ended session takes part in
    /// aborts if it had not voted, and the session's end counts as its ack (nobody
    /// can act as it any more). Visits only the transactions it joined.
    pub(in crate::sm) fn two_phase_on_session_end<'a>(
        &mut self,
        session_id: SessionId,
        ids: impl Iterator<Item = &'a str>,
    ) {
        let index = self.last_command_index;
        let participant = session_id.to_string();
        for id in ids {
            let Ok(id) = id.parse::<TransactionId>() else {
                continue;
            };
            let Some(transaction) = self.two_phase.get(id) else {
                continue;
            };
            if transaction.state == TwoPhaseState::Preparing
                && !transaction.votes.contains_key(&participant)
            {
                let reason = Some(AbortReason::SessionEnded);
                self.decide_two_phase(id, TwoPhaseState::Aborted, reason, index);
            }
            self.two_phase.ack(id, &participant);
        }
    }
}

fn voted(transaction: &Transaction) -> Outcome {
    Outcome::TwoPhase(TwoPhaseOutcome::Voted {
        id: transaction.id,
        state: transaction.state,
    })
}
