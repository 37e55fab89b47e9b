//! The rules of locks as `State` methods: acquire (grant, queue or refuse a
//! deadlock), release, withdraw, and release on session end.

use super::locks::{find_cycle, wait_for_graph, Lock, LockMode, Waiter};
use super::sessions::SessionId;
use super::{Outcome, State};

impl State {
    /// `delay`: the lock-delay for a lock this creates, and the token an expired
    /// holder presents to re-acquire during its lock-delay.
    pub(super) fn acquire_lock(
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
            return Outcome::SessionNotFound { session_id };
        }
        let now = self.cluster_time_ms;
        let lock = self.locks.entry(name.to_owned()).or_insert_with(|| Lock {
            lock_delay_ms,
            ..Lock::default()
        });
        // The expired holder presenting its token takes the lock back during its
        // lock-delay (as in Chubby), ahead of any waiter; that ends the delay.
        if lock.delayed_until_ms != 0
            && previous_token.is_some_and(|token| token == lock.delayed_token)
            && lock.compatible(mode)
        {
            let until = lock.delayed_until_ms;
            lock.delayed_until_ms = 0;
            lock.waiters
                .retain(|waiter| waiter.session_id != session_id);
            let fencing_token = lock.grant(
                session_id,
                mode,
                0,
                index,
                now,
                &mut self.last_fencing_token,
            );
            self.lock_delays.remove(&(until, name.to_owned()));
            return Outcome::LockGranted { fencing_token };
        }
        if let Some(hold) = lock.hold_of(session_id) {
            // Re-acquiring in the same mode returns the current grant.
            return if hold.mode == mode {
                Outcome::LockGranted {
                    fencing_token: hold.fencing_token,
                }
            } else {
                Outcome::WrongState {
                    message: format!(
                        "session {session_id} holds {name:?} in {} mode",
                        hold.mode.name()
                    ),
                }
            };
        }
        // A retried acquire (say, after a leader crash lost the answer) resumes the
        // session's existing waiter instead of queuing a second one.
        if let Some(waiter) = lock
            .waiters
            .iter()
            .find(|w| w.session_id == session_id && w.mode == mode)
        {
            return Outcome::LockQueued {
                waiter_id: waiter.waiter_id,
            };
        }
        if lock.grantable_now(mode) {
            let fencing_token = lock.grant(
                session_id,
                mode,
                0,
                index,
                now,
                &mut self.last_fencing_token,
            );
            return Outcome::LockGranted { fencing_token };
        }
        if !wait {
            self.drop_if_idle(name);
            return Outcome::LockHeld;
        }
        let blockers = self.locks[name].blockers(session_id);
        if let Some(cycle) = find_cycle(&wait_for_graph(&self.locks), session_id, &blockers) {
            self.drop_if_idle(name);
            return Outcome::Deadlock { cycle };
        }
        let lock = self.locks.get_mut(name).expect("created above");
        lock.waiters.push_back(Waiter {
            waiter_id: index,
            session_id,
            mode,
            since_ms: now,
        });
        Outcome::LockQueued { waiter_id: index }
    }

    pub(super) fn release_lock(
        &mut self,
        name: &str,
        session_id: SessionId,
        fencing_token: u64,
        index: u64,
    ) -> Outcome {
        let now = self.cluster_time_ms;
        let Some(lock) = self.locks.get_mut(name) else {
            return Outcome::WrongState {
                message: format!("{name:?} is not held"),
            };
        };
        let Some(position) = lock
            .holders
            .iter()
            .position(|hold| hold.session_id == session_id)
        else {
            return Outcome::WrongState {
                message: format!("session {session_id} does not hold {name:?}"),
            };
        };
        if lock.holders[position].fencing_token != fencing_token {
            return Outcome::StaleFencingToken {
                current: lock.holders[position].fencing_token,
            };
        }
        lock.holders.remove(position);
        lock.grant_waiters(index, now, &mut self.last_fencing_token);
        self.drop_if_idle(name);
        Outcome::LockReleased
    }

    /// Withdraws a waiter; if it was granted meanwhile, says so (the caller holds it).
    pub(super) fn withdraw_waiter(&mut self, name: &str, waiter_id: u64) -> Outcome {
        let Some(lock) = self.locks.get_mut(name) else {
            return Outcome::LockHeld;
        };
        if let Some(hold) = lock
            .holders
            .iter()
            .find(|hold| hold.waiter_id == waiter_id && waiter_id != 0)
        {
            return Outcome::LockGranted {
                fencing_token: hold.fencing_token,
            };
        }
        lock.waiters.retain(|waiter| waiter.waiter_id != waiter_id);
        // Removing a waiter can unblock readers queued behind a writer.
        let (index, now) = (self.last_command_index, self.cluster_time_ms);
        if let Some(lock) = self.locks.get_mut(name) {
            lock.grant_waiters(index, now, &mut self.last_fencing_token);
        }
        self.drop_if_idle(name);
        Outcome::LockHeld
    }

    /// Releases every hold and withdraws every waiter of an ended session. When the
    /// session `expired` holding a lock with a lock-delay, that lock is held back.
    pub(super) fn release_session_locks(&mut self, session_id: SessionId, expired: bool) {
        let (index, now) = (self.last_command_index, self.cluster_time_ms);
        let touched: Vec<String> = self
            .locks
            .iter()
            .filter(|(_, lock)| {
                lock.holders.iter().any(|h| h.session_id == session_id)
                    || lock.waiters.iter().any(|w| w.session_id == session_id)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in touched {
            if let Some(lock) = self.locks.get_mut(&name) {
                let lost = lock
                    .holders
                    .iter()
                    .find(|hold| hold.session_id == session_id)
                    .map(|h| h.fencing_token);
                if let (true, Some(token), true) = (expired, lost, lock.lock_delay_ms > 0) {
                    lock.delayed_until_ms = now.saturating_add(lock.lock_delay_ms);
                    lock.delayed_token = token;
                    self.lock_delays
                        .insert((lock.delayed_until_ms, name.clone()));
                }
                let lock = self.locks.get_mut(&name).expect("present");
                lock.holders.retain(|hold| hold.session_id != session_id);
                lock.waiters
                    .retain(|waiter| waiter.session_id != session_id);
                lock.grant_waiters(index, now, &mut self.last_fencing_token);
            }
            self.drop_if_idle(&name);
        }
    }

    /// Ends the lock-delays that are over and grants their waiters.
    pub(super) fn end_lock_delays(&mut self) {
        let (index, now) = (self.last_command_index, self.cluster_time_ms);
        while let Some((until, name)) = self.lock_delays.first().cloned() {
            if until > now {
                return;
            }
            self.lock_delays.pop_first();
            if let Some(lock) = self.locks.get_mut(&name) {
                if lock.delayed_until_ms == until {
                    lock.delayed_until_ms = 0;
                    lock.grant_waiters(index, now, &mut self.last_fencing_token);
                }
            }
            self.drop_if_idle(&name);
        }
    }

    fn drop_if_idle(&mut self, name: &str) {
        if self.locks.get(name).is_some_and(|lock| lock.is_idle()) {
            self.locks.remove(name);
        }
    }
}
