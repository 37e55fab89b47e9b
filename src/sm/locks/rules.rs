//! The rules of locks as `State` methods: acquire (grant, queue or refuse a
//! deadlock), release, withdraw, the session-end hook (release and withdraw, with
//! lock-delay on expiry) and the end of lock-delays as time advances. Every change
//! to a lock goes through `Locks`, which keeps the wait-for graph in step. They read
//! sessions only to check a requester is alive.

use super::{Hold, LockCommand, LockMode, Waiter};
use crate::limits::Replicated;
use crate::sm::events::{EventBody, LostReason};
use crate::sm::sessions::{Session, SessionId};
use crate::sm::wait_queue::{again, granted_to, release_position};
use crate::sm::{LockOutcome, Refusal};
use crate::sm::{Outcome, State};

impl State {
    /// Applies one lock command at command index `index`.
    pub(in crate::sm) fn apply_lock(&mut self, command: &LockCommand, index: u64) -> Outcome {
        match command {
            LockCommand::Acquire {
                name,
                session_id,
                mode,
                wait,
                lock_delay_ms,
                previous_token,
            } => self.acquire_lock(
                name,
                *session_id,
                *mode,
                *wait,
                (*lock_delay_ms, *previous_token),
                index,
            ),
            LockCommand::Release {
                name,
                session_id,
                fencing_token,
            } => self.release_lock(name, (*session_id, *fencing_token), index),
            LockCommand::Withdraw { name, waiter_id } => self.withdraw_waiter(name, *waiter_id),
        }
    }

    /// `delay`: the lock-delay for a lock this creates, and the token an expired
    /// holder presents to re-acquire during its lock-delay.
    fn acquire_lock(
        &mut self,
        name: &str,
        session_id: SessionId,
        mode: LockMode,
        wait: bool,
        delay: (u64, Option<u64>),
        index: u64,
    ) -> Outcome {
        let (lock_delay_ms, previous_token) = delay;
        if self.sessions.get(session_id).is_none() {
            return Outcome::Refused(Refusal::SessionNotFound { session_id });
        }
        let clock = (index, self.cluster_time_ms);
        if self.locks.get(name).is_none() && self.locks.len() >= Replicated::MAX_RESOURCES_PER_ROOM
        {
            return crate::sm::too_many("locks", Replicated::MAX_RESOURCES_PER_ROOM);
        }
        let lock = self.locks.get_or_create(name, lock_delay_ms);
        // The expired holder presenting its token takes the lock back during its
        // lock-delay (as in Chubby), ahead of any waiter; that ends the delay.
        if lock.delayed_until_ms != 0
            && previous_token.is_some_and(|token| token == lock.delayed_token)
            && lock.compatible(mode)
        {
            let until = lock.delayed_until_ms;
            self.locks.set_delay(name, 0, 0);
            self.locks
                .remove_waiters(name, |waiter| waiter.session_id == session_id);
            self.lock_delays.remove(&(until, name.to_owned()));
            return self.grant_lock_now(name, session_id, mode, clock);
        }
        let same = (|h: &Hold| h.mode == mode, |w: &Waiter| w.mode == mode);
        if let Some(earlier) = again(&lock.holders, &lock.waiters, session_id, same) {
            let held = |h: &Hold| {
                format!(
                    "session {session_id} holds {name:?} in {} mode",
                    h.mode.name()
                )
            };
            return earlier.answer(super::ANSWERS, held);
        }
        if lock.grantable_now(mode) {
            return self.grant_lock_now(name, session_id, mode, clock);
        }
        if !wait {
            self.locks.drop_if_idle(name);
            return Outcome::Lock(LockOutcome::Held);
        }
        if lock.waiters.len() >= Replicated::MAX_WAITERS {
            return crate::sm::too_many("waiters per lock", Replicated::MAX_WAITERS);
        }
        if let Some(cycle) = self.deadlock_cycle(name, session_id) {
            self.locks.drop_if_idle(name);
            return Outcome::Lock(LockOutcome::Deadlock { cycle });
        }
        self.locks.push_waiter(
            name,
            Waiter {
                waiter_id: index,
                session_id,
                mode,
                since_ms: clock.1,
            },
        );
        Outcome::Lock(LockOutcome::Queued { waiter_id: index })
    }

    /// Grants `name` to `session_id` at once (not to a waiter).
    fn grant_lock_now(
        &mut self,
        name: &str,
        session_id: SessionId,
        mode: LockMode,
        clock: (u64, u64),
    ) -> Outcome {
        let tokens = &mut self.last_fencing_token;
        let fencing_token = self.locks.grant(name, session_id, mode, 0, clock, tokens);
        self.emit(EventBody::LockGranted {
            name: name.to_owned(),
            session_id,
            fencing_token,
            mode: mode.name(),
        });
        Outcome::Lock(LockOutcome::Granted { fencing_token })
    }

    /// The cycle `session_id` waiting on `name` would close, if any.
    #[cfg(not(test))]
    fn deadlock_cycle(&self, name: &str, session_id: SessionId) -> Option<Vec<SessionId>> {
        self.locks.find_cycle(name, session_id)
    }

    /// The cycle `session_id` waiting on `name` would close, if any; tests may ask
    /// for the old full rebuild instead (to measure it against the incremental graph).
    #[cfg(test)]
    fn deadlock_cycle(&self, name: &str, session_id: SessionId) -> Option<Vec<SessionId>> {
        if super::reference::enabled() {
            return super::reference::deadlock_cycle(&self.locks, name, session_id);
        }
        self.locks.find_cycle(name, session_id)
    }

    fn release_lock(&mut self, name: &str, hold: (SessionId, u64), index: u64) -> Outcome {
        let holders = self.locks.get(name).map_or(&[][..], |lock| &lock.holders);
        let not_held = || format!("session {} does not hold {name:?}", hold.0);
        let position = match release_position(holders, hold, not_held) {
            Ok(position) => position,
            Err(refusal) => return refusal,
        };
        self.locks.remove_hold(name, position);
        self.emit(EventBody::LockReleased {
            name: name.to_owned(),
            session_id: hold.0,
            fencing_token: hold.1,
        });
        let clock = (index, self.cluster_time_ms);
        self.locks
            .grant_waiters(name, clock, &mut self.last_fencing_token, &mut self.events);
        self.locks.drop_if_idle(name);
        Outcome::Lock(LockOutcome::Released)
    }

    /// Withdraws a waiter; if it was granted meanwhile, says so (the caller holds it).
    fn withdraw_waiter(&mut self, name: &str, waiter_id: u64) -> Outcome {
        let Some(lock) = self.locks.get(name) else {
            return Outcome::Lock(LockOutcome::Held);
        };
        if let Some(hold) = granted_to(&lock.holders, waiter_id) {
            return Outcome::Lock(LockOutcome::Granted {
                fencing_token: hold.fencing_token,
            });
        }
        self.locks
            .remove_waiters(name, |waiter| waiter.waiter_id == waiter_id);
        // Removing a waiter can unblock readers queued behind a writer.
        let clock = (self.last_command_index, self.cluster_time_ms);
        self.locks
            .grant_waiters(name, clock, &mut self.last_fencing_token, &mut self.events);
        self.locks.drop_if_idle(name);
        Outcome::Lock(LockOutcome::Held)
    }

    /// The session-end hook: releases every hold and withdraws every waiter of an
    /// ended session (only the locks it holds or awaits are visited). When the
    /// session `expired` holding a lock with a lock-delay, that lock is held back.
    pub(in crate::sm) fn locks_on_session_end(&mut self, session: &Session, expired: bool) {
        let session_id = session.id;
        let clock = (self.last_command_index, self.cluster_time_ms);
        for name in self.locks.locks_of(session_id) {
            let Some(lock) = self.locks.get(&name) else {
                continue;
            };
            let lost = lock.hold_of(session_id).map(|hold| hold.fencing_token);
            if let (true, Some(token), true) = (expired, lost, lock.lock_delay_ms > 0) {
                let until = clock.1.saturating_add(lock.lock_delay_ms);
                self.locks.set_delay(&name, until, token);
                self.lock_delays.insert((until, name.clone()));
            }
            let lock = &self.locks[name.as_str()];
            if let Some(position) = lock
                .holders
                .iter()
                .position(|hold| hold.session_id == session_id)
            {
                let fencing_token = lock.holders[position].fencing_token;
                self.locks.remove_hold(&name, position);
                self.emit(EventBody::LockLost {
                    name: name.clone(),
                    session_id,
                    fencing_token,
                    reason: LostReason::of(expired),
                });
            }
            self.locks
                .remove_waiters(&name, |waiter| waiter.session_id == session_id);
            self.locks
                .grant_waiters(&name, clock, &mut self.last_fencing_token, &mut self.events);
            self.locks.drop_if_idle(&name);
        }
    }

    /// Ends the lock-delays that are over and grants their waiters.
    pub(in crate::sm) fn end_lock_delays(&mut self) {
        let clock = (self.last_command_index, self.cluster_time_ms);
        while let Some((until, name)) = self.lock_delays.first().cloned() {
            if until > clock.1 {
                return;
            }
            self.lock_delays.pop_first();
            if self
                .locks
                .get(&name)
                .is_some_and(|lock| lock.delayed_until_ms == until)
            {
                self.locks.set_delay(&name, 0, 0);
                self.locks.grant_waiters(
                    &name,
                    clock,
                    &mut self.last_fencing_token,
                    &mut self.events,
                );
            }
            self.locks.drop_if_idle(&name);
        }
    }
}
