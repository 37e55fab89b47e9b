//! What locks, semaphores and elections share about their holders: a grant stamped
//! with a fencing token, a release that must present the holder's current token,
//! and a withdrawal that finds the grant its waiter already got.
//!
//! Only read-only lookups over a room's holders and the token stamp live here:
//! each room still changes its own holders and waiters itself (the locks room only
//! through `Locks`, which keeps its wait-for graph in step). Like all of `sm`, it
//! must not depend on storage, Raft, the clock or the HTTP layer; it knows no room.

use super::sessions::SessionId;
use super::Outcome;

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

/// The position among `holders` of `session_id`'s hold, for a release presenting
/// `fencing_token`; the refusal is `not_held()` if the session holds nothing, or a
/// stale token naming the current one.
pub fn release_position<H: Granted>(
    holders: &[H],
    session_id: SessionId,
    fencing_token: u64,
    not_held: impl FnOnce() -> Outcome,
) -> Result<usize, Outcome> {
    let Some(position) = holders.iter().position(|h| h.holder() == session_id) else {
        return Err(not_held());
    };
    let current = holders[position].token();
    if current != fencing_token {
        return Err(Outcome::StaleFencingToken { current });
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

    /// (session, token, waiter id).
    struct Hold(SessionId, u64, u64);

    impl Granted for Hold {
        fn holder(&self) -> SessionId {
            self.0
        }
        fn token(&self) -> u64 {
            self.1
        }
        fn granted_waiter(&self) -> u64 {
            self.2
        }
    }

    fn not_held() -> Outcome {
        Outcome::WrongState {
            message: "not held".into(),
        }
    }

    #[test]
    fn a_release_needs_the_holders_current_token() {
        let holders = [Hold(1, 5, 0), Hold(2, 7, 3)];
        assert_eq!(release_position(&holders, 2, 7, not_held), Ok(1));
        assert_eq!(
            release_position(&holders, 2, 5, not_held),
            Err(Outcome::StaleFencingToken { current: 7 })
        );
        assert_eq!(release_position(&holders, 3, 7, not_held), Err(not_held()));
    }

    #[test]
    fn a_withdrawal_finds_only_a_grant_that_waited() {
        let holders = [Hold(1, 5, 0), Hold(2, 7, 3)];
        assert_eq!(granted_to(&holders, 3).map(|h| h.0), Some(2));
        assert!(
            granted_to(&holders, 0).is_none(),
            "waiter id 0 is no waiter"
        );
        assert!(granted_to(&holders, 4).is_none());
    }

    #[test]
    fn a_stamp_records_the_token_it_hands_out() {
        let (mut last, mut tokens) = (0, 9);
        assert_eq!(stamp(&mut last, &mut tokens, 4), 10, "one past the last");
        assert_eq!((last, tokens), (10, 10));
        assert_eq!(stamp(&mut last, &mut tokens, 20), 20, "the command index");
    }
}
