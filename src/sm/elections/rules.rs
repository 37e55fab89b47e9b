//! The rules of elections as `State` methods: campaign (lead, queue or refuse),
//! resign, withdraw and the session-end hook (withdraw the ended session's
//! candidacies and pass on its leadership). They read sessions only to check a
//! candidate is alive.

use super::{Candidate, ElectionCommand};
use crate::limits::Replicated;
use crate::sm::events::{EventBody, LostReason};
use crate::sm::sessions::Room;
use crate::sm::sessions::SessionId;
use crate::sm::too_many;
use crate::sm::wait_queue::{drop_if_idle, forget_session, granted_to, release_position};
use crate::sm::{ElectionOutcome, Refusal};
use crate::sm::{Outcome, State};

/// `election.leader` for `name`'s current leader (or nobody).
fn leader_event(name: &str, election: &super::Election) -> EventBody {
    let leader = election.leader.as_ref();
    EventBody::ElectionLeader {
        name: name.to_owned(),
        session_id: leader.map(|l| l.session_id),
        term: leader.map_or(0, |l| l.term),
    }
}

impl State {
    /// Applies one election command at command index `index`.
    pub(in crate::sm) fn apply_election(
        &mut self,
        command: &ElectionCommand,
        index: u64,
    ) -> Outcome {
        match command {
            ElectionCommand::Campaign {
                name,
                session_id,
                value_json,
                priority,
                wait,
            } => self.campaign(name, *session_id, value_json, *priority, *wait, index),
            ElectionCommand::Resign {
                name,
                session_id,
                term,
            } => self.resign(name, *session_id, *term, index),
            ElectionCommand::Withdraw { name, waiter_id } => {
                self.withdraw_candidate(name, *waiter_id)
            }
        }
    }

    fn campaign(
        &mut self,
        name: &str,
        session_id: SessionId,
        value_json: &str,
        priority: i32,
        wait: bool,
        index: u64,
    ) -> Outcome {
        if self.sessions.get(session_id).is_none() {
            return Outcome::Refused(Refusal::SessionNotFound { session_id });
        }
        let now = self.cluster_time_ms;
        if !self.elections.contains_key(name)
            && self.elections.len() >= Replicated::MAX_RESOURCES_PER_ROOM
        {
            return too_many("elections", Replicated::MAX_RESOURCES_PER_ROOM);
        }
        let election = self.elections.entry(name.to_owned()).or_default();
        if let Some(leader) = election
            .leader
            .as_ref()
            .filter(|l| l.session_id == session_id)
        {
            return Outcome::Election(ElectionOutcome::Elected { term: leader.term });
        }
        if let Some(candidate) = election
            .candidates
            .iter()
            .find(|c| c.session_id == session_id)
        {
            return Outcome::Election(ElectionOutcome::Queued {
                waiter_id: candidate.waiter_id,
            });
        }
        let candidate = Candidate {
            waiter_id: index,
            session_id,
            value_json: value_json.to_owned(),
            priority,
            since_ms: now,
        };
        if election.leader.is_none() {
            election.enqueue(candidate);
            election.promote(index, now, &mut self.last_fencing_token);
            let term = election.leader.as_ref().map_or(0, |l| l.term);
            self.joined(session_id, Room::Election, name);
            self.emit(EventBody::ElectionLeader {
                name: name.to_owned(),
                session_id: Some(session_id),
                term,
            });
            return Outcome::Election(ElectionOutcome::Elected { term });
        }
        if !wait {
            let leader = election.leader.as_ref();
            return Outcome::Election(ElectionOutcome::NotElected {
                leader_session_id: leader.map(|l| l.session_id),
                term: leader.map_or(0, |l| l.term),
            });
        }
        if election.candidates.len() >= Replicated::MAX_WAITERS {
            return too_many("candidates per election", Replicated::MAX_WAITERS);
        }
        election.enqueue(candidate);
        self.joined(session_id, Room::Election, name);
        Outcome::Election(ElectionOutcome::Queued { waiter_id: index })
    }

    fn resign(&mut self, name: &str, session_id: SessionId, term: u64, index: u64) -> Outcome {
        let now = self.cluster_time_ms;
        let leader = self
            .elections
            .get(name)
            .map_or(&[][..], |e| e.leader.as_slice());
        let not_led = || format!("session {session_id} does not lead {name:?}");
        if let Err(refusal) = release_position(leader, (session_id, term), not_led) {
            return refusal;
        }
        let election = self.elections.get_mut(name).expect("it has a leader");
        election.leader = None;
        election.promote(index, now, &mut self.last_fencing_token);
        let next = leader_event(name, election);
        drop_if_idle(&mut self.elections, name);
        self.emit(EventBody::ElectionResigned {
            name: name.to_owned(),
            session_id,
            term,
        });
        self.emit(next);
        self.left(session_id, Room::Election, name);
        Outcome::Election(ElectionOutcome::Resigned)
    }

    fn withdraw_candidate(&mut self, name: &str, waiter_id: u64) -> Outcome {
        let Some(election) = self.elections.get_mut(name) else {
            return Outcome::Election(ElectionOutcome::Withdrawn);
        };
        // A candidate's waiter id is its campaign's index, never 0.
        if let Some(leader) = granted_to(election.leader.as_slice(), waiter_id) {
            return Outcome::Election(ElectionOutcome::Elected { term: leader.term });
        }
        let standing = election
            .candidates
            .iter()
            .find(|c| c.waiter_id == waiter_id)
            .map(|c| c.session_id);
        election.candidates.retain(|c| c.waiter_id != waiter_id);
        let leader = election.leader.as_ref();
        let refusal = Outcome::Election(ElectionOutcome::NotElected {
            leader_session_id: leader.map(|l| l.session_id),
            term: leader.map_or(0, |l| l.term),
        });
        drop_if_idle(&mut self.elections, name);
        if let Some(session_id) = standing {
            self.left(session_id, Room::Election, name);
        }
        refusal
    }

    /// The session-end hook: withdraws an ended session's candidacies and, if it
    /// led, promotes the next candidate.
    /// Visits only the elections the session joined (`names`, in name order).
    pub(in crate::sm) fn elections_on_session_end<'a>(
        &mut self,
        session_id: SessionId,
        names: impl Iterator<Item = &'a str>,
        expired: bool,
    ) {
        let (index, now) = (self.last_command_index, self.cluster_time_ms);
        let (tokens, events) = (&mut self.last_fencing_token, &mut self.events);
        forget_session(&mut self.elections, names, |name, election| {
            election.candidates.retain(|c| c.session_id != session_id);
            if let Some(term) = election
                .leader
                .as_ref()
                .filter(|l| l.session_id == session_id)
                .map(|l| l.term)
            {
                election.leader = None;
                election.promote(index, now, tokens);
                let lost = EventBody::ElectionLost {
                    name: name.to_owned(),
                    session_id,
                    term,
                    reason: LostReason::of(expired),
                };
                events.push(index, lost);
                events.push(index, leader_event(name, election));
            }
        });
    }
}
