//! What locks, semaphores and elections share about their holders: a grant stamped
//! with a fencing token, a release that must present the holder's current token,
//! and a withdrawal that finds the grant its waiter already got.
//!
//! A retried acquire meets its session's earlier grant or waiter the same way in
//! every room ([`again`]).
//!
//! Only read-only lookups over a room's holders and the token stamp live here:
//! each room still changes its own holders and waiters itself (the locks room only
//! through `Locks`, which keeps its wait-for graph in step). Like all of `sm`, it
//! must not depend on storage, Raft, the clock or the HTTP layer; it knows no room.

use std::collections::BTreeMap;

use super::sessions::SessionId;
use super::Outcome;
use crate::sm::Refusal;

/// A hold granted from a wait queue: a lock hold, a semaphore permit or an
/// election's leadership.
pub trait Granted {
    fn holder(&self) -> SessionId;
    /// The fencing token (an election's term).
    fn token(&self) -> u64;
    /// The waiter it was granted to, if it waited (0 if granted at once).
    fn granted_waiter(&self) -> u64;
}

/// Implements [`Granted`] for a hold type with fields `session_id`, `waiter_id`
/// and the named token field.
macro_rules! impl_granted {
    ($hold:ty, $token:ident) => {
        impl $crate::sm::wait_queue::Granted for $hold {
            fn holder(&self) -> $crate::sm::sessions::SessionId {
                self.session_id
            }
            fn token(&self) -> u64 {
                self.$token
            }
            fn granted_waiter(&self) -> u64 {
                self.waiter_id
            }
        }
    };
}
pub(crate) use impl_granted;

/// Implements [`Waiting`] for a waiter type with fields `session_id` and
/// `waiter_id`.
macro_rules! impl_waiting {
    ($waiter:ty) => {
        impl $crate::sm::wait_queue::Waiting for $waiter {
            fn waiter_session(&self) -> $crate::sm::sessions::SessionId {
                self.session_id
            }
            fn waiter_id(&self) -> u64 {
                self.waiter_id
            }
        }
    };
}
pub(crate) use impl_waiting;

/// The position among `holders` (none when the resource does not exist) of the
/// hold of the session that presents `(session_id, fencing_token)` to release it;
/// the refusal is `WrongState` with the message `not_held` words if the session
/// holds nothing, or a stale token naming the current one.
pub fn release_position<H: Granted>(
    holders: &[H],
    (session_id, fencing_token): (SessionId, u64),
    not_held: impl FnOnce() -> String,
) -> Result<usize, Outcome> {
    let Some(position) = holders.iter().position(|h| h.holder() == session_id) else {
        return Err(Outcome::Refused(Refusal::WrongState {
            message: not_held(),
        }));
    };
    let current = holders[position].token();
    if current != fencing_token {
        return Err(Outcome::Refused(Refusal::StaleFencingToken { current }));
    }
    Ok(position)
}

/// The hold granted to waiter `waiter_id` (never a hold granted at once): a
/// withdrawal that raced its grant reports the grant instead.
pub fn granted_to<H: Granted>(holders: &[H], waiter_id: u64) -> Option<&H> {
    holders
        .iter()
        .find(|h| h.granted_waiter() == waiter_id && waiter_id != 0)
}

/// A waiter in a room's queue.
pub trait Waiting {
    fn waiter_session(&self) -> SessionId;
    fn waiter_id(&self) -> u64;
}

/// What a retried acquire (say, after a leader crash lost the answer) finds of its
/// session's earlier request in a room.
#[derive(Debug, PartialEq, Eq)]
pub enum Again<'a, H> {
    /// A grant asking the same: answer it again, with this token.
    Granted(u64),
    /// A grant asking otherwise (another mode, another permit count).
    HeldOtherwise(&'a H),
    /// A waiter asking the same: resume it rather than queue a second one.
    Queued(u64),
}

/// How a room words a grant and a queued waiter.
pub struct Answers {
    pub granted: fn(u64) -> Outcome,
    pub queued: fn(u64) -> Outcome,
}

impl<H> Again<'_, H> {
    /// The outcome a retry is answered with; a grant asking otherwise is refused
    /// as `WrongState` with the message `held` words.
    pub fn answer(self, answers: Answers, held: impl FnOnce(&H) -> String) -> Outcome {
        match self {
            Again::Granted(token) => (answers.granted)(token),
            Again::Queued(waiter_id) => (answers.queued)(waiter_id),
            Again::HeldOtherwise(hold) => Outcome::Refused(Refusal::WrongState {
                message: held(hold),
            }),
        }
    }
}

/// `session_id`'s earlier grant among `holders` or waiter among `waiters`; `same`
/// says whether a hold, and a waiter, asked what this request asks.
pub fn again<'a, H: Granted, W: Waiting + 'a>(
    holders: &'a [H],
    waiters: impl IntoIterator<Item = &'a W>,
    session_id: SessionId,
    same: (impl Fn(&H) -> bool, impl Fn(&W) -> bool),
) -> Option<Again<'a, H>> {
    if let Some(hold) = holders.iter().find(|h| h.holder() == session_id) {
        return Some(match same.0(hold) {
            true => Again::Granted(hold.token()),
            false => Again::HeldOtherwise(hold),
        });
    }
    waiters
        .into_iter()
        .find(|w| w.waiter_session() == session_id && same.1(w))
        .map(|w| Again::Queued(w.waiter_id()))
}

/// A resource that is dropped from its room once nobody holds or awaits it.
pub trait Idle {
    fn is_idle(&self) -> bool;
}

/// Drops resource `name` from `room` if it is idle.
pub fn drop_if_idle<T: Idle>(room: &mut BTreeMap<String, T>, name: &str) {
    if room.get(name).is_some_and(T::is_idle) {
        room.remove(name);
    }
}

/// Applies `forget` (what an ended session leaves behind) to the resources of
/// `room` named in `names` (those the session joined), and drops those left idle.
pub fn forget_session<'a, T: Idle>(
    room: &mut BTreeMap<String, T>,
    names: impl Iterator<Item = &'a str>,
    mut forget: impl FnMut(&str, &mut T),
) {
    for name in names {
        if let Some(resource) = room.get_mut(name) {
            forget(name, resource);
        }
        drop_if_idle(room, name);
    }
}

/// Stamps a grant: the next token from the cluster-wide allocator `tokens` (see
/// `sm::next_token`), also recorded as the resource's `last_token`.
pub fn stamp(last_token: &mut u64, tokens: &mut u64, index: u64) -> u64 {
    let token = super::next_token(tokens, index);
    *last_token = token;
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::LockOutcome;

    #[derive(Debug, PartialEq, Eq)]
    struct Hold {
        session_id: SessionId,
        token: u64,
        waiter_id: u64,
    }
    impl_granted!(Hold, token);

    #[allow(non_snake_case)]
    fn Hold(session_id: SessionId, token: u64, waiter_id: u64) -> Hold {
        Hold {
            session_id,
            token,
            waiter_id,
        }
    }

    fn not_held() -> String {
        "not held".into()
    }

    #[test]
    fn a_release_needs_the_holders_current_token() {
        let holders = [Hold(1, 5, 0), Hold(2, 7, 3)];
        assert_eq!(release_position(&holders, (2, 7), not_held), Ok(1));
        assert_eq!(
            release_position(&holders, (2, 5), not_held),
            Err(Outcome::Refused(Refusal::StaleFencingToken { current: 7 }))
        );
        let refusal = Outcome::Refused(Refusal::WrongState {
            message: not_held(),
        });
        assert_eq!(release_position(&holders, (3, 7), not_held), Err(refusal));
    }

    #[test]
    fn a_withdrawal_finds_only_a_grant_that_waited() {
        let holders = [Hold(1, 5, 0), Hold(2, 7, 3)];
        assert_eq!(granted_to(&holders, 3).map(|h| h.session_id), Some(2));
        assert!(
            granted_to(&holders, 0).is_none(),
            "waiter id 0 is no waiter"
        );
        assert!(granted_to(&holders, 4).is_none());
    }

    struct Wait {
        session_id: SessionId,
        waiter_id: u64,
        asks_same: bool,
    }
    impl_waiting!(Wait);

    #[test]
    fn a_retry_meets_its_earlier_grant_or_waiter() {
        let holders = [Hold(1, 5, 0), Hold(2, 7, 3)];
        let wait = |session_id, waiter_id, asks_same| Wait {
            session_id,
            waiter_id,
            asks_same,
        };
        let waiters = [wait(3, 8, false), wait(3, 9, true)];
        let find = |session, hold_same: bool| {
            again(
                &holders,
                &waiters,
                session,
                (|_: &Hold| hold_same, |w: &Wait| w.asks_same),
            )
        };
        assert_eq!(find(2, true), Some(Again::Granted(7)));
        assert_eq!(find(1, false), Some(Again::HeldOtherwise(&holders[0])));
        assert_eq!(find(3, true), Some(Again::Queued(9)));
        assert_eq!(find(4, true), None);
        let answers = Answers {
            granted: |fencing_token| Outcome::Lock(LockOutcome::Granted { fencing_token }),
            queued: |waiter_id| Outcome::Lock(LockOutcome::Queued { waiter_id }),
        };
        let held = |hold: &Hold| format!("holds {}", hold.token);
        assert_eq!(
            Again::HeldOtherwise(&holders[0]).answer(answers, held),
            Outcome::Refused(Refusal::WrongState {
                message: "holds 5".into()
            })
        );
    }

    #[test]
    fn a_stamp_records_the_token_it_hands_out() {
        let (mut last, mut tokens) = (0, 9);
        assert_eq!(stamp(&mut last, &mut tokens, 4), 10, "one past the last");
        assert_eq!((last, tokens), (10, 10));
        assert_eq!(stamp(&mut last, &mut tokens, 20), 20, "the command index");
    }
}
