//! The two-phase-commit commands: what a creation, a vote or an ack carries in the
//! log, and what applying one did. It depends only on the room's own types.

use serde::{Deserialize, Serialize};

use super::{Decision, TransactionId, TwoPhaseState};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTransaction {
    pub participants: Vec<String>,
    pub participants_are_sessions: bool,
    pub payload_json: String,
    pub timeout_ms: u64,
    pub created_by: Option<String>,
}

/// A state-changing two-phase-commit operation. Whether the caller may act as
/// `participant` is checked against the submission's `acting_as`
/// (`State::party_refusal`); `cast_by` is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TwoPhaseCommand {
    Create(NewTransaction),
    Vote {
        id: TransactionId,
        participant: String,
        decision: Decision,
        cast_by: Option<String>,
    },
    Ack {
        id: TransactionId,
        participant: String,
    },
}

impl TwoPhaseCommand {
    /// A cheap estimate of the variable part of its encoded size, in bytes.
    pub fn size_hint(&self) -> usize {
        match self {
            Self::Create(new) => {
                new.payload_json.len() + new.participants.iter().map(|p| p.len() + 8).sum::<usize>()
            }
            Self::Vote {
                participant,
                cast_by,
                ..
            } => participant.len() + cast_by.as_ref().map_or(0, String::len),
            Self::Ack { participant, .. } => participant.len(),
        }
    }
}

/// What applying a two-phase-commit command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TwoPhaseOutcome {
    Created {
        id: TransactionId,
    },
    /// The vote is recorded (or was already, the same); the state right after it.
    Voted {
        id: TransactionId,
        state: TwoPhaseState,
    },
    /// The ack is recorded; `removed` when it was the last one.
    Acked {
        id: TransactionId,
        state: TwoPhaseState,
        removed: bool,
    },
    NotFound {
        id: TransactionId,
    },
    NotAParticipant {
        participant: String,
    },
    AlreadyVoted {
        decision: Decision,
    },
    /// The transaction was decided before this vote arrived (it aborted at the
    /// timeout or when a session ended); the vote is not counted.
    Decided {
        state: TwoPhaseState,
    },
    /// An ack before the decision.
    NotDecided,
}
