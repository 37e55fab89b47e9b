//! What the proposals and two-phase-commit rooms share: their records by id, with
//! an index of (party, id) so a voter or participant finds its own records
//! (`?voter=`, `?participant=`) without a scan, and the check of a new record's
//! parties. It owns only the two maps; each room keeps its own timers and rules.
//! Of the rooms it reads only `sessions` (a session party's liveness).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::sessions::SessionId;
use super::{Outcome, Refusal, State};

/// A record with an id and a fixed list of parties (voters, participants).
pub trait Parties {
    fn id(&self) -> u64;
    fn parties(&self) -> &[String];
}

/// Records by id, indexed by party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByParty<T> {
    by_id: BTreeMap<u64, T>,
    by_party: BTreeSet<(String, u64)>,
}

impl<T> Default for ByParty<T> {
    fn default() -> Self {
        Self {
            by_id: BTreeMap::new(),
            by_party: BTreeSet::new(),
        }
    }
}

impl<T: Parties> ByParty<T> {
    pub fn get(&self, id: u64) -> Option<&T> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.by_id.get_mut(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Records with ids above `after`, in id order.
    pub fn range_from(&self, after: Option<u64>) -> impl Iterator<Item = &T> {
        let start = after.map_or(0, |after| after.saturating_add(1));
        self.by_id.range(start..).map(|(_, record)| record)
    }

    /// Records `party` takes part in, with ids above `after`, in id order.
    pub fn of_party<'a>(
        &'a self,
        party: &str,
        after: Option<u64>,
    ) -> impl Iterator<Item = &'a T> + 'a {
        let start = after.map_or(0, |after| after.saturating_add(1));
        let party = party.to_owned();
        self.by_party
            .range((party.clone(), start)..)
            .take_while(move |(p, _)| *p == party)
            .filter_map(|(_, id)| self.by_id.get(id))
    }

    pub fn insert(&mut self, record: T) {
        let id = record.id();
        for party in record.parties() {
            self.by_party.insert((party.clone(), id));
        }
        self.by_id.insert(id, record);
    }

    pub fn remove(&mut self, id: u64) -> Option<T> {
        let record = self.by_id.remove(&id)?;
        for party in record.parties() {
            self.by_party.remove(&(party.clone(), id));
        }
        Some(record)
    }
}

impl State {
    /// The check of a new record's parties (`what`: "voter", "participant"): at
    /// least one, each named once, and with `are_sessions` each the id of a live
    /// session; returns those sessions' ids.
    pub(in crate::sm) fn party_sessions(
        &self,
        parties: &[String],
        are_sessions: bool,
        what: &str,
    ) -> Result<Vec<SessionId>, Outcome> {
        let invalid = |message: String| Outcome::Refused(Refusal::InvalidCommand { message });
        if parties.is_empty() {
            return Err(invalid(format!("at least one {what} is needed")));
        }
        let distinct: BTreeSet<&String> = parties.iter().collect();
        if distinct.len() != parties.len() {
            return Err(invalid(format!("each {what} may be named once")));
        }
        if !are_sessions {
            return Ok(Vec::new());
        }
        parties
            .iter()
            .map(|party| {
                let session_id = party
                    .parse::<SessionId>()
                    .map_err(|_| invalid(format!("{what} {party:?} is not a session id")))?;
                match self.sessions.get(session_id) {
                    Some(_) => Ok(session_id),
                    None => Err(Outcome::Refused(Refusal::SessionNotFound { session_id })),
                }
            })
            .collect()
    }
}
