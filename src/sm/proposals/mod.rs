//! The proposals room: quorum votes on a proposal ([`Proposal`]), its command
//! ([`ProposalCommand`]), its rules (`rules`: create, vote, decide, expire at the
//! deadline, remove after retention) and its session-end hook (a voter's session
//! ending counts as `abstain` when `voters_are_sessions`).
//!
//! A proposal is decided as soon as no sequence of the remaining votes can change
//! the outcome ([`decide`]), otherwise at its deadline by the replicated tick. The
//! decision and the tally (who voted what, at which command index, cast by which
//! token subject) never change afterwards. Like all of `sm`, it must not depend on
//! storage, Raft, the clock or the HTTP layer; of the other rooms it touches only
//! `sessions` (a session voter's liveness and owner).

mod command;
mod rules;

#[cfg(test)]
mod tests;

pub use command::{NewProposal, ProposalCommand, ProposalOutcome};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::parties::{ByParty, Parties};
use super::time::Timers;

pub type ProposalId = u64;

/// How the votes decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// Accepted when yes > (voters − abstentions) / 2.
    Majority,
    /// Accepted when every voter that did not abstain voted yes, and one did.
    Unanimous,
    /// Accepted when yes ≥ n.
    Threshold(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Vote {
    Yes,
    No,
    Abstain,
}

impl Vote {
    pub fn name(self) -> &'static str {
        match self {
            Vote::Yes => "yes",
            Vote::No => "no",
            Vote::Abstain => "abstain",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "yes" => Some(Vote::Yes),
            "no" => Some(Vote::No),
            "abstain" => Some(Vote::Abstain),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProposalState {
    Open,
    Accepted,
    Rejected,
    /// The deadline passed before the votes decided.
    Expired,
}

impl ProposalState {
    pub fn name(self) -> &'static str {
        match self {
            ProposalState::Open => "open",
            ProposalState::Accepted => "accepted",
            ProposalState::Rejected => "rejected",
            ProposalState::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Open, Self::Accepted, Self::Rejected, Self::Expired]
            .into_iter()
            .find(|state| state.name() == text)
    }
}

/// One recorded vote: what, at which command index, and which token subject cast
/// it (`None` on an open node; `session_ended` for a session voter whose session
/// ended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cast {
    pub vote: Vote,
    pub index: u64,
    pub cast_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: ProposalId,
    pub title: String,
    /// JSON text as sent.
    pub payload_json: String,
    pub rule: Rule,
    /// The voters in the order given (session ids in decimal when
    /// `voters_are_sessions`).
    pub voters: Vec<String>,
    pub voters_are_sessions: bool,
    pub votes: BTreeMap<String, Cast>,
    pub created_at_ms: u64,
    pub created_by: Option<String>,
    pub deadline_at_ms: u64,
    /// How long it is kept once decided (cluster time).
    pub retention_ms: u64,
    pub state: ProposalState,
    pub decided_at_index: Option<u64>,
    pub decided_at_ms: Option<u64>,
}

/// How many votes of each kind a proposal has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub yes: u32,
    pub no: u32,
    pub abstain: u32,
}

impl Proposal {
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for cast in self.votes.values() {
            match cast.vote {
                Vote::Yes => counts.yes += 1,
                Vote::No => counts.no += 1,
                Vote::Abstain => counts.abstain += 1,
            }
        }
        counts
    }
}

/// The decision of `rule` over `voters` voters with these `counts` so far: `Some`
/// when every way the remaining voters could vote gives the same outcome.
///
/// Acceptance only grows with more yes votes and never with more no votes, so the
/// outcome is fixed when it is accepted even if everyone left votes no (the worst
/// case), or rejected even if everyone left votes yes (the best case).
pub fn decide(rule: Rule, voters: u32, counts: Counts) -> Option<ProposalState> {
    let remaining = voters.saturating_sub(counts.yes + counts.no + counts.abstain);
    let worst = Counts {
        no: counts.no + remaining,
        ..counts
    };
    let best = Counts {
        yes: counts.yes + remaining,
        ..counts
    };
    if accepted(rule, voters, worst) {
        Some(ProposalState::Accepted)
    } else if !accepted(rule, voters, best) {
        Some(ProposalState::Rejected)
    } else {
        None
    }
}

/// Whether a complete tally accepts.
pub fn accepted(rule: Rule, voters: u32, counts: Counts) -> bool {
    match rule {
        Rule::Majority => 2 * u64::from(counts.yes) > u64::from(voters - counts.abstain),
        Rule::Unanimous => {
            counts.yes >= 1 && counts.no == 0 && { counts.yes + counts.abstain == voters }
        }
        Rule::Threshold(n) => counts.yes >= n,
    }
}

/// Every proposal, with its timers and the voter index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposals {
    /// By id, indexed by voter (for `?voter=`).
    records: ByParty<Proposal>,
    /// (deadline, id) of open proposals.
    deadlines: Timers,
    /// (decided_at_ms + retention_ms, id) of decided ones.
    removals: Timers,
}

impl Parties for Proposal {
    fn id(&self) -> u64 {
        self.id
    }

    fn parties(&self) -> &[String] {
        &self.voters
    }
}

impl Proposals {
    pub fn get(&self, id: ProposalId) -> Option<&Proposal> {
        self.records.get(id)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Proposals with ids above `after`, in id order.
    pub fn range_from(&self, after: Option<ProposalId>) -> impl Iterator<Item = &Proposal> {
        self.records.range_from(after)
    }

    /// Proposals `voter` is a voter of, with ids above `after`, in id order.
    pub fn of_voter<'a>(
        &'a self,
        voter: &str,
        after: Option<ProposalId>,
    ) -> impl Iterator<Item = &'a Proposal> + 'a {
        self.records.of_party(voter, after)
    }

    fn insert(&mut self, proposal: Proposal) {
        self.deadlines
            .insert((proposal.deadline_at_ms, proposal.id));
        self.records.insert(proposal);
    }

    fn get_mut(&mut self, id: ProposalId) -> Option<&mut Proposal> {
        self.records.get_mut(id)
    }

    /// Records the decision of an open proposal (moving it from the deadline timers
    /// to the removal timers).
    /// Decides open proposal `id`; false if there is none (or it was decided).
    fn decided(&mut self, id: ProposalId, state: ProposalState, index: u64, now_ms: u64) -> bool {
        let Some(proposal) = self.records.get_mut(id) else {
            return false;
        };
        if proposal.state != ProposalState::Open {
            return false;
        }
        proposal.state = state;
        proposal.decided_at_index = Some(index);
        proposal.decided_at_ms = Some(now_ms);
        self.deadlines.remove(&(proposal.deadline_at_ms, id));
        let at = now_ms.saturating_add(proposal.retention_ms);
        self.removals.insert((at, id));
        true
    }

    fn remove(&mut self, id: ProposalId) {
        if let Some(proposal) = self.records.remove(id) {
            self.deadlines.remove(&(proposal.deadline_at_ms, id));
            if let Some(at) = proposal.decided_at_ms {
                self.removals
                    .remove(&(at.saturating_add(proposal.retention_ms), id));
            }
        }
    }

    /// When the next deadline or removal is due.
    pub fn next_due_ms(&self) -> Option<u64> {
        [
            super::time::first_at(&self.deadlines),
            super::time::first_at(&self.removals),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
