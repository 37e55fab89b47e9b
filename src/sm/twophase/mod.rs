//! The two-phase-commit room: a coordinator whose state is the replicated log. A
//! [`Transaction`] names its participants; each votes `commit` or `abort` once; all
//! commit → `committed`, any abort, a missing vote at the timeout or (with
//! `participants_are_sessions`) a participant's session ending before it voted →
//! `aborted`. The decision is final, and a leader change cannot leave anyone in
//! doubt: the decision is state every replica has. Participants `ack` after
//! applying their part; a record is kept until every participant acked (a session
//! participant's end counts as its ack), never dropped unacked, and the number of
//! records is capped ([`crate::limits::Replicated::MAX_TWO_PHASE`], 429 beyond).
//!
//! Its command is [`TwoPhaseCommand`], its rules are in `rules`. Like all of `sm`, it
//! must not depend on storage, Raft, the clock or the HTTP layer; of the other rooms
//! it touches only `sessions` (a session participant's liveness).

mod command;
mod rules;

#[cfg(test)]
mod tests;

pub use command::{NewTransaction, TwoPhaseCommand, TwoPhaseOutcome};

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::parties::{ByParty, Parties};
use super::time::Timers;

pub type TransactionId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Commit,
    Abort,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Commit => "commit",
            Decision::Abort => "abort",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "commit" => Some(Decision::Commit),
            "abort" => Some(Decision::Abort),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TwoPhaseState {
    Preparing,
    Committed,
    Aborted,
}

impl TwoPhaseState {
    pub fn name(self) -> &'static str {
        match self {
            TwoPhaseState::Preparing => "preparing",
            TwoPhaseState::Committed => "committed",
            TwoPhaseState::Aborted => "aborted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Preparing, Self::Committed, Self::Aborted]
            .into_iter()
            .find(|state| state.name() == text)
    }
}

/// Why a transaction aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortReason {
    /// A participant voted abort.
    Vote,
    /// A participant had not voted at the timeout.
    Timeout,
    /// A session participant's session ended before it voted.
    SessionEnded,
}

impl AbortReason {
    pub fn name(self) -> &'static str {
        match self {
            AbortReason::Vote => "vote",
            AbortReason::Timeout => "timeout",
            AbortReason::SessionEnded => "session_ended",
        }
    }
}

/// One recorded vote and the command index it was applied at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ballot {
    pub decision: Decision,
    pub index: u64,
    pub cast_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: TransactionId,
    pub participants: Vec<String>,
    pub participants_are_sessions: bool,
    /// JSON text as sent.
    pub payload_json: String,
    pub votes: BTreeMap<String, Ballot>,
    pub acks: BTreeSet<String>,
    pub created_at_ms: u64,
    pub created_by: Option<String>,
    pub timeout_at_ms: u64,
    pub state: TwoPhaseState,
    pub reason: Option<AbortReason>,
    pub decided_at_index: Option<u64>,
}

/// Every kept transaction, its timeouts and the participant index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoPhase {
    /// By id, indexed by participant (for `?participant=`).
    records: ByParty<Transaction>,
    /// (timeout, id) of preparing transactions.
    timeouts: Timers,
}

impl Parties for Transaction {
    fn id(&self) -> u64 {
        self.id
    }

    fn parties(&self) -> &[String] {
        &self.participants
    }
}

impl TwoPhase {
    pub fn get(&self, id: TransactionId) -> Option<&Transaction> {
        self.records.get(id)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Transactions with ids above `after`, in id order.
    pub fn range_from(&self, after: Option<TransactionId>) -> impl Iterator<Item = &Transaction> {
        self.records.range_from(after)
    }

    /// Transactions `participant` takes part in, ids above `after`, in id order.
    pub fn of_participant<'a>(
        &'a self,
        participant: &str,
        after: Option<TransactionId>,
    ) -> impl Iterator<Item = &'a Transaction> + 'a {
        self.records.of_party(participant, after)
    }

    /// When the next timeout is due.
    pub fn next_due_ms(&self) -> Option<u64> {
        super::time::first_at(&self.timeouts)
    }

    fn insert(&mut self, transaction: Transaction) {
        self.timeouts
            .insert((transaction.timeout_at_ms, transaction.id));
        self.records.insert(transaction);
    }

    fn get_mut(&mut self, id: TransactionId) -> Option<&mut Transaction> {
        self.records.get_mut(id)
    }

    fn decide(
        &mut self,
        id: TransactionId,
        state: TwoPhaseState,
        reason: Option<AbortReason>,
        index: u64,
    ) -> bool {
        let Some(transaction) = self.records.get_mut(id) else {
            return false;
        };
        if transaction.state != TwoPhaseState::Preparing {
            return false;
        }
        transaction.state = state;
        transaction.reason = reason;
        transaction.decided_at_index = Some(index);
        self.timeouts.remove(&(transaction.timeout_at_ms, id));
        self.remove_if_done(id);
        true
    }

    /// Records `participant`'s ack (a session participant's end counts as one, even
    /// before the decision); removes the record once it is decided and every
    /// participant acked. `true` if it was removed.
    fn ack(&mut self, id: TransactionId, participant: &str) -> bool {
        let Some(transaction) = self.records.get_mut(id) else {
            return false;
        };
        transaction.acks.insert(participant.to_owned());
        self.remove_if_done(id)
    }

    fn remove_if_done(&mut self, id: TransactionId) -> bool {
        let done = self.records.get(id).is_some_and(|t| {
            t.state != TwoPhaseState::Preparing && t.acks.len() == t.participants.len()
        });
        if !done {
            return false;
        }
        if let Some(transaction) = self.records.remove(id) {
            self.timeouts.remove(&(transaction.timeout_at_ms, id));
        }
        true
    }
}
