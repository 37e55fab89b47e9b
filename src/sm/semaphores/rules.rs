//! The rules of semaphores as `State` methods: acquire (grant, queue or refuse),
//! release, withdraw and the session-end hook (release and withdraw, then grant the
//! waiters that now fit). They read sessions only to check a requester is alive.

use super::{PermitWaiter, SemaphoreCommand};
use crate::sm::sessions::SessionId;
use crate::sm::wait_queue::{granted_to, release_position};
use crate::sm::{Outcome, State};

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
            } => self.release_permits(name, *session_id, *fencing_token, index),
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

    fn release_permits(
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
        let position = match release_position(&semaphore.holders, session_id, fencing_token, || {
            Outcome::WrongState {
                message: format!("session {session_id} holds no permits of {name:?}"),
            }
        }) {
            Ok(position) => position,
            Err(refusal) => return refusal,
        };
        semaphore.holders.remove(position);
        semaphore.grant_waiters(index, now, &mut self.last_fencing_token);
        self.drop_idle_semaphore(name);
        Outcome::PermitsReleased
    }

    fn withdraw_permits(&mut self, name: &str, waiter_id: u64, index: u64) -> Outcome {
        let now = self.cluster_time_ms;
        let Some(semaphore) = self.semaphores.get_mut(name) else {
            return Outcome::PermitsUnavailable;
        };
        if let Some(held) = granted_to(&semaphore.holders, waiter_id) {
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

    /// The session-end hook: releases an ended session's permits, withdraws its
    /// waiters, and grants the waiters that now fit.
    pub(in crate::sm) fn semaphores_on_session_end(&mut self, session_id: SessionId) {
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
    }
}
