//! The rules of barriers as `State` methods: wait (arrive), leave and the
//! session-end hook (break every generation the ended session had joined). They
//! read sessions only to check an arrival is alive.

use super::BarrierCommand;
use crate::limits::Replicated;
use crate::sm::events::EventBody;
use crate::sm::sessions::Room;
use crate::sm::sessions::SessionId;
use crate::sm::too_many;
use crate::sm::{BarrierOutcome, Refusal};
use crate::sm::{Outcome, State};

impl State {
    /// Applies one barrier command.
    pub(in crate::sm) fn apply_barrier(&mut self, command: &BarrierCommand) -> Outcome {
        match command {
            BarrierCommand::Wait {
                name,
                session_id,
                parties,
            } => self.arrive(name, *session_id, *parties),
            BarrierCommand::Leave {
                name,
                session_id,
                generation,
            } => self.leave(name, *session_id, *generation),
        }
    }

    fn arrive(&mut self, name: &str, session_id: SessionId, parties: u32) -> Outcome {
        if self.sessions.get(session_id).is_none() {
            return Outcome::Refused(Refusal::SessionNotFound { session_id });
        }
        if parties == 0 {
            return Outcome::Refused(Refusal::InvalidCommand {
                message: "parties must be at least 1".into(),
            });
        }
        if !self.barriers.contains_key(name)
            && self.barriers.len() >= Replicated::MAX_RESOURCES_PER_ROOM
        {
            return too_many("barriers", Replicated::MAX_RESOURCES_PER_ROOM);
        }
        let barrier = self.barriers.entry(name.to_owned()).or_default();
        if barrier.arrived.is_empty() {
            barrier.parties = parties;
        }
        if barrier.parties != parties {
            return Outcome::Refused(Refusal::WrongState {
                message: format!(
                    "barrier {name:?} is gathering {} parties, not {parties}",
                    barrier.parties
                ),
            });
        }
        let generation = barrier.generation;
        barrier.arrived.insert(session_id);
        if barrier.arrived.len() as u32 >= barrier.parties {
            barrier.end_generation(false);
            self.emit(EventBody::BarrierReleased {
                name: name.to_owned(),
                generation,
            });
            return Outcome::Barrier(BarrierOutcome::Released { generation });
        }
        self.joined(session_id, Room::Barrier, name);
        Outcome::Barrier(BarrierOutcome::Waiting { generation })
    }

    fn leave(&mut self, name: &str, session_id: SessionId, generation: u64) -> Outcome {
        let Some(barrier) = self.barriers.get_mut(name) else {
            return Outcome::Barrier(BarrierOutcome::Left);
        };
        if barrier.generation != generation {
            // That generation already ended: report how.
            return match barrier.ended.get(&generation) {
                Some(false) => Outcome::Barrier(BarrierOutcome::Released { generation }),
                _ => Outcome::Barrier(BarrierOutcome::Broken { generation }),
            };
        }
        barrier.arrived.remove(&session_id);
        self.left(session_id, Room::Barrier, name);
        Outcome::Barrier(BarrierOutcome::Left)
    }

    /// The session-end hook: breaks every barrier generation the ended session had
    /// joined.
    /// Visits only the barriers the session joined (`names`).
    pub(in crate::sm) fn barriers_on_session_end<'a>(
        &mut self,
        session_id: SessionId,
        names: impl Iterator<Item = &'a str>,
    ) {
        for name in names {
            if let Some(barrier) = self.barriers.get_mut(name) {
                if barrier.arrived.contains(&session_id) {
                    let generation = barrier.generation;
                    barrier.end_generation(true);
                    self.emit(EventBody::BarrierBroken {
                        name: name.to_owned(),
                        generation,
                        session_id,
                    });
                }
            }
        }
    }
}
