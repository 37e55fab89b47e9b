//! The rules of sessions as `State` methods: create, renew, and end — which runs
//! every room's session-end hook (ephemeral keys, assigned tasks, locks,
//! semaphores, barriers, elections).
//!
//! Must not depend on storage, Raft, clocks or IO.

use super::{NewSession, Room, SessionCommand, SessionId};
use crate::limits::Replicated;
use crate::sm::command::Outcome;
use crate::sm::events::EventBody;
use crate::sm::State;
use crate::sm::{Refusal, SessionOutcome};

pub(in crate::sm) fn session_not_found(session_id: SessionId) -> Outcome {
    Outcome::Refused(Refusal::SessionNotFound { session_id })
}

impl State {
    /// Applies one session command.
    pub(in crate::sm) fn apply_session(&mut self, command: &SessionCommand, index: u64) -> Outcome {
        match command {
            SessionCommand::Create(new) => self.create_session(new, index),
            SessionCommand::Keepalive { session_id } => {
                self.renew_session(*session_id, self.cluster_time_ms)
            }
            SessionCommand::End { session_id } => {
                self.end_session(*session_id, "session_ended", false)
            }
        }
    }

    pub(in crate::sm) fn create_session(&mut self, new: &NewSession, index: u64) -> Outcome {
        if self.sessions.len() >= Replicated::MAX_SESSIONS {
            return Outcome::Refused(Refusal::LimitReached {
                message: format!("at most {} sessions", Replicated::MAX_SESSIONS),
            });
        }
        let session = self
            .sessions
            .create(index, new.clone(), self.cluster_time_ms);
        let (session_id, expires_at_ms) = (session.id, session.expires_at_ms);
        self.emit(EventBody::SessionOpened {
            session_id,
            name: new.name.clone(),
            capabilities: new.capabilities.iter().cloned().collect(),
            expires_at_ms,
        });
        Outcome::Session(SessionOutcome::Created {
            session_id,
            expires_at_ms,
        })
    }

    pub(in crate::sm) fn renew_session(&mut self, id: SessionId, at_ms: u64) -> Outcome {
        match self.sessions.renew(id, at_ms.min(self.cluster_time_ms)) {
            Some(expires_at_ms) => Outcome::Session(SessionOutcome::Renewed { expires_at_ms }),
            None => session_not_found(id),
        }
    }

    /// Ends a session: its ephemeral keys go, its assigned tasks are requeued
    /// (the attempt counted), and queued work is reassigned.
    /// `expired` distinguishes expiry from an explicit end (lock-delay applies only
    /// to expiry).
    pub(in crate::sm) fn end_session(
        &mut self,
        id: SessionId,
        reason: &str,
        expired: bool,
    ) -> Outcome {
        let Some(session) = self.sessions.remove(id) else {
            return session_not_found(id);
        };
        // The session's own event first, then what its end did in each room.
        self.emit(if expired {
            EventBody::SessionExpired { session_id: id }
        } else {
            EventBody::SessionEnded { session_id: id }
        });
        self.kv_on_session_end(&session);
        self.tasks_on_session_end(id, reason);
        self.locks_on_session_end(&session, expired);
        let named = |room: Room| {
            session
                .joined
                .iter()
                .filter(move |(joined, _)| *joined == room)
                .map(|(_, name)| name.as_str())
        };
        self.semaphores_on_session_end(id, named(Room::Semaphore), expired);
        self.barriers_on_session_end(id, named(Room::Barrier));
        self.elections_on_session_end(id, named(Room::Election), expired);
        self.proposals_on_session_end(id, named(Room::Proposal));
        self.two_phase_on_session_end(id, named(Room::TwoPhase));
        for name in named(Room::Barrier) {
            self.note_use(Room::Barrier, name);
        }
        Outcome::Session(SessionOutcome::Ended)
    }

    /// Records that `session_id` joined `name` of `room` (`Session::joined`).
    pub(in crate::sm) fn joined(&mut self, session_id: SessionId, room: Room, name: &str) {
        if let Some(session) = self.sessions.get_mut(session_id) {
            session.joined.insert((room, name.to_owned()));
        }
    }

    /// Records that `session_id` left `name` of `room`.
    pub(in crate::sm) fn left(&mut self, session_id: SessionId, room: Room, name: &str) {
        if let Some(session) = self.sessions.get_mut(session_id) {
            session.joined.remove(&(room, name.to_owned()));
        }
    }
}
