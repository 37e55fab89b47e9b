//! The rules of semaphores, barriers and elections as `State` methods.

use super::primitives::{Candidate, PermitWaiter};
use super::sessions::SessionId;
use super::{Outcome, State};

impl State {
    // ----- semaphores -----------------------------------------------------------

    pub(super) fn acquire_permits(
        &mut self,
        name: &str,
        session_id: SessionId,
        permits: u32,
        limit: u32,
        wait: bool,
        index: u64,
    ) -> Outcome {
        if self.sessions.get(session_id).is_none() {
            return Outcome::SessionNotFound { session_id };
        }
        if permits == 0 || permits > limit {
            return Outcome::InvalidCommand {
                message: format!("permits must be 1 to the limit ({limit})"),
            };
        }
        let now = self.cluster_time_ms;
        let semaphore = self.semaphores.entry(name.to_owned()).or_default();
        if semaphore.is_idle() && semaphore.limit == 0 {
            semaphore.limit = limit;
        }
        if semaphore.limit != limit {
            return Outcome::LimitMismatch {
                limit: semaphore.limit,
            };
        }
        if let Some(held) = semaphore
            .holders
            .iter()
            .find(|p| p.session_id == session_id)
        {
            return if held.permits == permits {
                Outcome::PermitsGranted {
                    fencing_token: held.fencing_token,
                }
            } else {
                Outcome::WrongState {
                    message: format!(
                        "session {session_id} already holds {} permits",
                        held.permits
                    ),
                }
            };
        }
        if let Some(waiter) = semaphore
            .waiters
            .iter()
            .find(|w| w.session_id == session_id && w.permits == permits)
        {
            return Outcome::PermitsQueued {
                waiter_id: waiter.waiter_id,
            };
        }
        if semaphore.waiters.is_empty() && semaphore.used() + permits <= semaphore.limit {
            let fencing_token = semaphore.grant(
                session_id,
                permits,
                0,
                index,
                now,
                &mut self.last_fencing_token,
            );
            return Outcome::PermitsGranted { fencing_token };
        }
        if !wait {
            self.drop_idle_semaphore(name);
            return Outcome::PermitsUnavailable;
        }
        semaphore.waiters.push_back(PermitWaiter {
            waiter_id: index,
            session_id,
            permits,
            since_ms: now,
        });
        Outcome::PermitsQueued { waiter_id: index }
    }

    pub(super) fn release_permits(
        &mut self,
        name: &str,
        session_id: SessionId,
        fencing_token: u64,
        index: u64,
    ) -> Outcome {
        let now = self.cluster_time_ms;
        let Some(semaphore) = self.semaphores.get_mut(name) else {
            return Outcome::WrongState {
                message: format!("session {session_id} holds no permits of {name:?}"),
            };
        };
        let Some(position) = semaphore
            .holders
            .iter()
            .position(|p| p.session_id == session_id)
        else {
            return Outcome::WrongState {
                message: format!("session {session_id} holds no permits of {name:?}"),
            };
        };
        if semaphore.holders[position].fencing_token != fencing_token {
            return Outcome::StaleFencingToken {
                current: semaphore.holders[position].fencing_token,
            };
        }
        semaphore.holders.remove(position);
        semaphore.grant_waiters(index, now, &mut self.last_fencing_token);
        self.drop_idle_semaphore(name);
        Outcome::PermitsReleased
    }

    pub(super) fn withdraw_permits(&mut self, name: &str, waiter_id: u64, index: u64) -> Outcome {
        let now = self.cluster_time_ms;
        let Some(semaphore) = self.semaphores.get_mut(name) else {
            return Outcome::PermitsUnavailable;
        };
        if let Some(held) = semaphore
            .holders
            .iter()
            .find(|p| p.waiter_id == waiter_id && waiter_id != 0)
        {
            return Outcome::PermitsGranted {
                fencing_token: held.fencing_token,
            };
        }
        semaphore.waiters.retain(|w| w.waiter_id != waiter_id);
        semaphore.grant_waiters(index, now, &mut self.last_fencing_token);
        self.drop_idle_semaphore(name);
        Outcome::PermitsUnavailable
    }

    fn drop_idle_semaphore(&mut self, name: &str) {
        if self.semaphores.get(name).is_some_and(|s| s.is_idle()) {
            self.semaphores.remove(name);
        }
    }

    // ----- barriers -------------------------------------------------------------

    pub(super) fn arrive(&mut self, name: &str, session_id: SessionId, parties: u32) -> Outcome {
        if self.sessions.get(session_id).is_none() {
            return Outcome::SessionNotFound { session_id };
        }
        if parties == 0 {
            return Outcome::InvalidCommand {
                message: "parties must be at least 1".into(),
            };
        }
        let barrier = self.barriers.entry(name.to_owned()).or_default();
        if barrier.arrived.is_empty() {
            barrier.parties = parties;
        }
        if barrier.parties != parties {
            return Outcome::WrongState {
                message: format!(
                    "barrier {name:?} is gathering {} parties, not {parties}",
                    barrier.parties
                ),
            };
        }
        let generation = barrier.generation;
        barrier.arrived.insert(session_id);
        if barrier.arrived.len() as u32 >= barrier.parties {
            barrier.end_generation(false);
            return Outcome::BarrierReleased { generation };
        }
        Outcome::BarrierWaiting { generation }
    }

    pub(super) fn leave(&mut self, name: &str, session_id: SessionId, generation: u64) -> Outcome {
        let Some(barrier) = self.barriers.get_mut(name) else {
            return Outcome::Withdrawn;
        };
        if barrier.generation != generation {
            // That generation already ended: report how.
            return match barrier.ended.get(&generation) {
                Some(false) => Outcome::BarrierReleased { generation },
                _ => Outcome::BarrierBroken { generation },
            };
        }
        barrier.arrived.remove(&session_id);
        Outcome::Withdrawn
    }

    // ----- elections ------------------------------------------------------------

    pub(super) fn campaign(
        &mut self,
        name: &str,
        session_id: SessionId,
        value_json: &str,
        priority: i32,
        wait: bool,
        index: u64,
    ) -> Outcome {
        if self.sessions.get(session_id).is_none() {
            return Outcome::SessionNotFound { session_id };
        }
        let now = self.cluster_time_ms;
        let election = self.elections.entry(name.to_owned()).or_default();
        if let Some(leader) = election
            .leader
            .as_ref()
            .filter(|l| l.session_id == session_id)
        {
            return Outcome::Elected { term: leader.term };
        }
        if let Some(candidate) = election
            .candidates
            .iter()
            .find(|c| c.session_id == session_id)
        {
            return Outcome::CampaignQueued {
                waiter_id: candidate.waiter_id,
            };
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
            return Outcome::Elected { term };
        }
        if !wait {
            let leader = election.leader.as_ref();
            return Outcome::NotElected {
                leader_session_id: leader.map(|l| l.session_id),
                term: leader.map_or(0, |l| l.term),
            };
        }
        election.enqueue(candidate);
        Outcome::CampaignQueued { waiter_id: index }
    }

    pub(super) fn resign(
        &mut self,
        name: &str,
        session_id: SessionId,
        term: u64,
        index: u64,
    ) -> Outcome {
        let now = self.cluster_time_ms;
        let Some(election) = self.elections.get_mut(name) else {
            return Outcome::WrongState {
                message: format!("session {session_id} does not lead {name:?}"),
            };
        };
        match &election.leader {
            Some(leader) if leader.session_id == session_id && leader.term == term => {}
            Some(leader) if leader.session_id == session_id => {
                return Outcome::StaleFencingToken {
                    current: leader.term,
                };
            }
            _ => {
                return Outcome::WrongState {
                    message: format!("session {session_id} does not lead {name:?}"),
                }
            }
        }
        election.leader = None;
        election.promote(index, now, &mut self.last_fencing_token);
        self.drop_idle_election(name);
        Outcome::Resigned
    }

    pub(super) fn withdraw_candidate(&mut self, name: &str, waiter_id: u64) -> Outcome {
        let Some(election) = self.elections.get_mut(name) else {
            return Outcome::Withdrawn;
        };
        if let Some(leader) = election
            .leader
            .as_ref()
            .filter(|l| l.waiter_id == waiter_id)
        {
            return Outcome::Elected { term: leader.term };
        }
        election.candidates.retain(|c| c.waiter_id != waiter_id);
        let leader = election.leader.as_ref();
        let refusal = Outcome::NotElected {
            leader_session_id: leader.map(|l| l.session_id),
            term: leader.map_or(0, |l| l.term),
        };
        self.drop_idle_election(name);
        refusal
    }

    fn drop_idle_election(&mut self, name: &str) {
        if self.elections.get(name).is_some_and(|e| e.is_idle()) {
            self.elections.remove(name);
        }
    }

    // ----- session end ----------------------------------------------------------

    /// Releases an ended session's permits and leadership, withdraws its waiters and
    /// candidacies, and breaks every barrier generation it had joined.
    pub(super) fn release_session_primitives(&mut self, session_id: SessionId) {
        let (index, now) = (self.last_command_index, self.cluster_time_ms);
        let names: Vec<String> = self.semaphores.keys().cloned().collect();
        for name in names {
            if let Some(semaphore) = self.semaphores.get_mut(&name) {
                let before = (semaphore.holders.len(), semaphore.waiters.len());
                semaphore.holders.retain(|p| p.session_id != session_id);
                semaphore.waiters.retain(|w| w.session_id != session_id);
                if before != (semaphore.holders.len(), semaphore.waiters.len()) {
                    semaphore.grant_waiters(index, now, &mut self.last_fencing_token);
                }
            }
            self.drop_idle_semaphore(&name);
        }
        for barrier in self.barriers.values_mut() {
            if barrier.arrived.contains(&session_id) {
                barrier.end_generation(true);
            }
        }
        let names: Vec<String> = self.elections.keys().cloned().collect();
        for name in names {
            if let Some(election) = self.elections.get_mut(&name) {
                election.candidates.retain(|c| c.session_id != session_id);
                if election
                    .leader
                    .as_ref()
                    .is_some_and(|l| l.session_id == session_id)
                {
                    election.leader = None;
                    election.promote(index, now, &mut self.last_fencing_token);
                }
            }
            self.drop_idle_election(&name);
        }
    }
}
