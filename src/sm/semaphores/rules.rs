//! The rules of semaphores as `State` methods: acquire (grant, queue or refuse),
//! release, withdraw and the session-end hook (release and withdraw, then grant the
//! waiters that now fit). They read sessions only to check a requester is alive.

use super::{Permit, PermitWaiter, SemaphoreCommand};
use crate::limits::Replicated;
use crate::sm::events::{EventBody, LostReason};
use crate::sm::sessions::Room;
use crate::sm::sessions::SessionId;
use crate::sm::too_many;
use crate::sm::wait_queue::{
    again, drop_if_idle, forget_session, granted_to, release_position, Idle,
};
use crate::sm::{Outcome, State};
use crate::sm::{Refusal, SemaphoreOutcome};

impl State {
    /// Applies one semaphore command at command index `index`.
    pub(in crate::sm) fn apply_semaphore(
        &mut self,
        command: &SemaphoreCommand,
        index: u64,
    ) -> Outcome {
        match command {
            SemaphoreCommand::Acquire {
                name,
                session_id,
                permits,
                limit,
                wait,
            } => self.acquire_permits(name, *session_id, *permits, *limit, *wait, index),
            SemaphoreCommand::Release {
                name,
                session_id,
                fencing_token,
            } => self.release_permits(name, (*session_id, *fencing_token), index),
            SemaphoreCommand::Withdraw { name, waiter_id } => {
                self.withdraw_permits(name, *waiter_id, index)
            }
        }
    }

    fn acquire_permits(
        &mut self,
        name: &str,
        session_id: SessionId,
        permits: u32,
        limit: u32,
        wait: bool,
        index: u64,
    ) -> Outcome {
        if self.sessions.get(session_id).is_none() {
            return Outcome::Refused(Refusal::SessionNotFound { session_id });
        }
        if permits == 0 || permits > limit {
            return Outcome::Refused(Refusal::InvalidCommand {
                message: format!("permits must be 1 to the limit ({limit})"),
            });
        }
        let now = self.cluster_time_ms;
        if !self.semaphores.contains_key(name)
            && self.semaphores.len() >= Replicated::MAX_RESOURCES_PER_ROOM
        {
            return too_many("semaphores", Replicated::MAX_RESOURCES_PER_ROOM);
        }
        let semaphore = self.semaphores.entry(name.to_owned()).or_default();
        if semaphore.is_idle() && semaphore.limit == 0 {
            semaphore.limit = limit;
        }
        if semaphore.limit != limit {
            return Outcome::Semaphore(SemaphoreOutcome::LimitMismatch {
                limit: semaphore.limit,
            });
        }
        let same = (
            |h: &Permit| h.permits == permits,
            |w: &PermitWaiter| w.permits == permits,
        );
        if let Some(earlier) = again(&semaphore.holders, &semaphore.waiters, session_id, same) {
            let held =
                |h: &Permit| format!("session {session_id} already holds {} permits", h.permits);
            return earlier.answer(super::ANSWERS, held);
        }
        if semaphore.waiters.is_empty() && semaphore.used() + permits <= limit {
            let tokens = &mut self.last_fencing_token;
            let fencing_token = semaphore.grant(session_id, permits, 0, index, now, tokens);
            self.joined(session_id, Room::Semaphore, name);
            self.emit(EventBody::SemaphoreGranted {
                name: name.to_owned(),
                session_id,
                fencing_token,
                permits,
            });
            return Outcome::Semaphore(SemaphoreOutcome::Granted { fencing_token });
        }
        if !wait {
            drop_if_idle(&mut self.semaphores, name);
            return Outcome::Semaphore(SemaphoreOutcome::Unavailable);
        }
        if semaphore.waiters.len() >= Replicated::MAX_WAITERS {
            return too_many("waiters per semaphore", Replicated::MAX_WAITERS);
        }
        semaphore.waiters.push_back(PermitWaiter {
            waiter_id: index,
            session_id,
            permits,
            since_ms: now,
        });
        self.joined(session_id, Room::Semaphore, name);
        Outcome::Semaphore(SemaphoreOutcome::Queued { waiter_id: index })
    }

    fn release_permits(&mut self, name: &str, hold: (SessionId, u64), index: u64) -> Outcome {
        let now = self.cluster_time_ms;
        let holders = self.semaphores.get(name).map_or(&[][..], |s| &s.holders);
        let not_held = || format!("session {} holds no permits of {name:?}", hold.0);
        let position = match release_position(holders, hold, not_held) {
            Ok(position) => position,
            Err(refusal) => return refusal,
        };
        let semaphore = self.semaphores.get_mut(name).expect("it holds permits");
        semaphore.holders.remove(position);
        self.events.push(
            index,
            EventBody::SemaphoreReleased {
                name: name.to_owned(),
                session_id: hold.0,
                fencing_token: hold.1,
            },
        );
        let (tokens, events) = (&mut self.last_fencing_token, &mut self.events);
        semaphore.grant_waiters(name, (index, now), tokens, events);
        drop_if_idle(&mut self.semaphores, name);
        // A session holds or awaits a semaphore once (`again`), so it has left it.
        self.left(hold.0, Room::Semaphore, name);
        Outcome::Semaphore(SemaphoreOutcome::Released)
    }

    fn withdraw_permits(&mut self, name: &str, waiter_id: u64, index: u64) -> Outcome {
        let now = self.cluster_time_ms;
        let Some(semaphore) = self.semaphores.get_mut(name) else {
            return Outcome::Semaphore(SemaphoreOutcome::Unavailable);
        };
        if let Some(held) = granted_to(&semaphore.holders, waiter_id) {
            return Outcome::Semaphore(SemaphoreOutcome::Granted {
                fencing_token: held.fencing_token,
            });
        }
        let waiting = semaphore
            .waiters
            .iter()
            .find(|w| w.waiter_id == waiter_id)
            .map(|w| w.session_id);
        semaphore.waiters.retain(|w| w.waiter_id != waiter_id);
        let (tokens, events) = (&mut self.last_fencing_token, &mut self.events);
        semaphore.grant_waiters(name, (index, now), tokens, events);
        drop_if_idle(&mut self.semaphores, name);
        if let Some(session_id) = waiting {
            self.left(session_id, Room::Semaphore, name);
        }
        Outcome::Semaphore(SemaphoreOutcome::Unavailable)
    }

    /// The session-end hook: releases an ended session's permits, withdraws its
    /// waiters, and grants the waiters that now fit.
    /// Visits only the semaphores the session joined (`names`, in name order).
    pub(in crate::sm) fn semaphores_on_session_end<'a>(
        &mut self,
        session_id: SessionId,
        names: impl Iterator<Item = &'a str>,
        expired: bool,
    ) {
        let clock = (self.last_command_index, self.cluster_time_ms);
        let (tokens, events) = (&mut self.last_fencing_token, &mut self.events);
        forget_session(&mut self.semaphores, names, |name, semaphore| {
            let before = (semaphore.holders.len(), semaphore.waiters.len());
            // A session holds a semaphore's permits under one grant (`again`).
            if let Some(lost) = semaphore
                .holders
                .iter()
                .find(|p| p.session_id == session_id)
            {
                let body = EventBody::SemaphoreLost {
                    name: name.to_owned(),
                    session_id,
                    fencing_token: lost.fencing_token,
                    reason: LostReason::of(expired),
                };
                events.push(clock.0, body);
            }
            semaphore.holders.retain(|p| p.session_id != session_id);
            semaphore.waiters.retain(|w| w.session_id != session_id);
            if before != (semaphore.holders.len(), semaphore.waiters.len()) {
                semaphore.grant_waiters(name, clock, tokens, events);
            }
        });
    }
}
