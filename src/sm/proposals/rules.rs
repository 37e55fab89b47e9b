//! The rules of proposals as `State` methods: create, vote, decide early, expire at
//! the deadline, remove after retention, and the session-end hook (a session voter's
//! end is its `abstain`). They read sessions only for session voters.

use super::{Cast, NewProposal, Proposal, ProposalCommand, ProposalId, ProposalOutcome};
use super::{ProposalState, Rule, Vote};
use crate::limits::Replicated;
use crate::sm::events::EventBody;
use crate::sm::sessions::{Room, SessionId};
use crate::sm::too_many;
use crate::sm::{Outcome, Refusal, State};

/// What a session voter's ending records as its `cast_by`.
pub const SESSION_ENDED: &str = "session_ended";

impl State {
    /// Applies one proposal command at command index `index`.
    pub(in crate::sm) fn apply_proposal(
        &mut self,
        command: &ProposalCommand,
        index: u64,
    ) -> Outcome {
        match command {
            ProposalCommand::Create(new) => self.create_proposal(new, index),
            ProposalCommand::Vote {
                proposal_id,
                voter,
                vote,
                cast_by,
            } => self.vote(*proposal_id, voter, *vote, cast_by.clone(), index),
        }
    }

    fn create_proposal(&mut self, new: &NewProposal, index: u64) -> Outcome {
        let sessions = match self.party_sessions(&new.voters, new.voters_are_sessions, "voter") {
            Ok(sessions) => sessions,
            Err(refusal) => return refusal,
        };
        if let Rule::Threshold(n) = new.rule {
            if n == 0 || n as usize > new.voters.len() {
                return Outcome::Refused(Refusal::InvalidCommand {
                    message: format!(
                        "a threshold must be between 1 and the number of voters ({}), got {n}",
                        new.voters.len()
                    ),
                });
            }
        }
        if self.proposals.len() >= Replicated::MAX_PROPOSALS {
            return too_many("proposals", Replicated::MAX_PROPOSALS);
        }
        let now = self.cluster_time_ms;
        let proposal = Proposal {
            id: index,
            title: new.title.clone(),
            payload_json: new.payload_json.clone(),
            rule: new.rule,
            voters: new.voters.clone(),
            voters_are_sessions: new.voters_are_sessions,
            votes: Default::default(),
            created_at_ms: now,
            created_by: new.created_by.clone(),
            deadline_at_ms: now.saturating_add(new.deadline_ms),
            retention_ms: new.retention_ms,
            state: ProposalState::Open,
            decided_at_index: None,
            decided_at_ms: None,
        };
        self.proposals.insert(proposal);
        self.emit(EventBody::ProposalCreated {
            proposal_id: index,
            title: new.title.clone(),
        });
        let name = index.to_string();
        for session_id in sessions {
            self.joined(session_id, Room::Proposal, &name);
        }
        Outcome::Proposal(ProposalOutcome::Created {
            proposal_id: index,
            state: ProposalState::Open,
        })
    }

    fn vote(
        &mut self,
        proposal_id: ProposalId,
        voter: &str,
        vote: Vote,
        cast_by: Option<String>,
        index: u64,
    ) -> Outcome {
        let Some(proposal) = self.proposals.get(proposal_id) else {
            return Outcome::Proposal(ProposalOutcome::NotFound { proposal_id });
        };
        if !proposal.voters.iter().any(|v| v == voter) {
            return Outcome::Proposal(ProposalOutcome::NotAVoter {
                voter: voter.to_owned(),
            });
        }
        if let Some(cast) = proposal.votes.get(voter) {
            return if cast.vote == vote {
                voted(proposal)
            } else {
                Outcome::Proposal(ProposalOutcome::AlreadyVoted { vote: cast.vote })
            };
        }
        if proposal.state != ProposalState::Open {
            return Outcome::Proposal(ProposalOutcome::Decided {
                state: proposal.state,
            });
        }
        self.record_vote(proposal_id, voter, vote, cast_by, index);
        let proposal = self.proposals.get(proposal_id).expect("just voted on");
        voted(proposal)
    }

    /// Records a vote on an open proposal and decides it if the votes now do.
    fn record_vote(
        &mut self,
        proposal_id: ProposalId,
        voter: &str,
        vote: Vote,
        cast_by: Option<String>,
        index: u64,
    ) {
        let Some(proposal) = self.proposals.get_mut(proposal_id) else {
            return;
        };
        let cast = Cast {
            vote,
            index,
            cast_by,
        };
        proposal.votes.insert(voter.to_owned(), cast);
        let voters = proposal.voters.len() as u32;
        let decision = super::decide(proposal.rule, voters, proposal.counts());
        let sessions = proposal.voters_are_sessions;
        if let Some(state) = decision {
            self.decide_proposal(proposal_id, state, index);
        }
        if sessions {
            if let Ok(session_id) = voter.parse::<SessionId>() {
                self.left(session_id, Room::Proposal, &proposal_id.to_string());
            }
        }
    }

    /// Decides open proposal `id` and says so (`proposal.decided`).
    fn decide_proposal(&mut self, id: ProposalId, state: ProposalState, index: u64) {
        let now = self.cluster_time_ms;
        if self.proposals.decided(id, state, index, now) {
            self.emit(EventBody::ProposalDecided {
                proposal_id: id,
                state: state.name().to_owned(),
            });
        }
    }

    /// Expires open proposals whose deadline passed and removes decided ones whose
    /// retention passed, at most [`Replicated::PROPOSAL_GC_BATCH`] of each per step.
    pub(in crate::sm) fn advance_proposals(&mut self) {
        let (now, index) = (self.cluster_time_ms, self.last_command_index);
        for _ in 0..Replicated::PROPOSAL_GC_BATCH {
            let Some(id) = crate::sm::time::first_due(&self.proposals.deadlines, now) else {
                break;
            };
            self.decide_proposal(id, ProposalState::Expired, index);
        }
        for _ in 0..Replicated::PROPOSAL_GC_BATCH {
            let Some(id) = crate::sm::time::first_due(&self.proposals.removals, now) else {
                break;
            };
            self.proposals.remove(id);
        }
    }

    /// The session-end hook: the ended session abstains on every open proposal it
    /// is a voter of and has not voted on (only those it joined are visited).
    pub(in crate::sm) fn proposals_on_session_end<'a>(
        &mut self,
        session_id: SessionId,
        ids: impl Iterator<Item = &'a str>,
    ) {
        let index = self.last_command_index;
        let voter = session_id.to_string();
        for id in ids {
            let Ok(id) = id.parse::<ProposalId>() else {
                continue;
            };
            let open = self
                .proposals
                .get(id)
                .is_some_and(|p| p.state == ProposalState::Open && !p.votes.contains_key(&voter));
            if open {
                let by = Some(SESSION_ENDED.to_owned());
                self.record_vote(id, &voter, Vote::Abstain, by, index);
            }
        }
    }
}

fn voted(proposal: &Proposal) -> Outcome {
    Outcome::Proposal(ProposalOutcome::Voted {
        proposal_id: proposal.id,
        state: proposal.state,
        counts: proposal.counts(),
    })
}
