//! The proposal commands: what a creation or a vote carries in the log, and what
//! applying one did. It depends only on the room's own types.

use serde::{Deserialize, Serialize};

use super::{Counts, ProposalId, ProposalState, Rule, Vote};

/// A proposal to create (checked for shape by the HTTP layer, for liveness of
/// session voters here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProposal {
    pub title: String,
    pub payload_json: String,
    pub rule: Rule,
    pub voters: Vec<String>,
    pub voters_are_sessions: bool,
    pub deadline_ms: u64,
    pub retention_ms: u64,
    /// The token subject creating it (recorded; `None` on an open node).
    pub created_by: Option<String>,
}

/// A state-changing proposal operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalCommand {
    Create(NewProposal),
    /// `voter` votes `vote`; `cast_by` is the token subject casting it (recorded in
    /// the tally). Whether that subject may cast it is checked against the
    /// submission's `acting_as` (`State::party_refusal`).
    Vote {
        proposal_id: ProposalId,
        voter: String,
        vote: Vote,
        cast_by: Option<String>,
    },
}

impl ProposalCommand {
    /// A cheap estimate of the variable part of its encoded size, in bytes.
    pub fn size_hint(&self) -> usize {
        match self {
            Self::Create(new) => {
                new.title.len()
                    + new.payload_json.len()
                    + new.voters.iter().map(|v| v.len() + 8).sum::<usize>()
            }
            Self::Vote { voter, cast_by, .. } => {
                voter.len() + cast_by.as_ref().map_or(0, String::len)
            }
        }
    }
}

/// What applying a proposal command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalOutcome {
    Created {
        proposal_id: ProposalId,
        state: ProposalState,
    },
    /// The vote is recorded (or was already, the same): the proposal's state and
    /// counts right after it.
    Voted {
        proposal_id: ProposalId,
        state: ProposalState,
        counts: Counts,
    },
    NotFound {
        proposal_id: ProposalId,
    },
    NotAVoter {
        voter: String,
    },
    /// The voter already voted something else.
    AlreadyVoted {
        vote: Vote,
    },
    /// The proposal was decided before this vote arrived; the vote is not counted.
    Decided {
        state: ProposalState,
    },
}
