//! Property test of locks, without Raft: random acquire / release / withdraw /
//! session-end / time sequences never double-grant, never let a token go back or be
//! granted twice, and never leave a grantable waiter at the head.

use crate::sm::sessions::SessionCommand;
use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::sm::locks::{LockMode, LockMode::Exclusive, LockMode::Shared};
use crate::sm::sessions::SessionId;
use crate::sm::test_support::{acquire_lock, release_lock, run, session, withdraw_nth};
use crate::sm::{Command, State};

#[derive(Debug, Clone)]
enum Op {
    Acquire {
        session: u8,
        lock: u8,
        mode: LockMode,
        wait: bool,
    },
    Release {
        lock: u8,
        session: u8,
        stale: bool,
    },
    Withdraw {
        lock: u8,
        nth: u8,
    },
    End {
        session: u8,
    },
    Advance {
        ms: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2u8, 1..5u8, any::<bool>(), any::<bool>())
            .prop_map(|(lock, session, shared, wait)| {
                let mode = if shared { Shared } else { Exclusive };
                Op::Acquire { session, lock, mode, wait }
            }),
        3 => (0..2u8, 1..5u8, any::<bool>()).prop_map(|(lock, session, stale)| Op::Release { lock, session, stale }),
        1 => (0..2u8, 0..3u8).prop_map(|(lock, nth)| Op::Withdraw { lock, nth }),
        1 => (1..5u8).prop_map(|session| Op::End { session }),
        1 => (0..1500u16).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn command_for(state: &State, op: &Op) -> Option<Command> {
    let name = |lock: &u8| format!("L{lock}");
    Some(match op {
        Op::Acquire {
            session,
            lock,
            mode,
            wait,
        } => acquire_lock(&name(lock), u64::from(*session), *mode, *wait),
        Op::Release {
            lock,
            session,
            stale,
        } => {
            let current = state
                .locks
                .get(&name(lock))
                .and_then(|l| l.hold_of(u64::from(*session)))
                .map_or(1, |h| h.fencing_token);
            release_lock(
                &name(lock),
                u64::from(*session),
                if *stale {
                    current.saturating_sub(1)
                } else {
                    current
                },
            )
        }
        Op::Withdraw { lock, nth } => withdraw_nth(state, &name(lock), *nth)?,
        Op::End { session } => Command::Session(SessionCommand::End {
            session_id: u64::from(*session),
        }),
        Op::Advance { .. } => return None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random acquire / release / withdraw / session-end / time sequences never
    /// produce two exclusive holders (or a writer beside a reader), tokens of a lock
    /// never decrease, and no waiter is left that could be granted.
    #[test]
    fn locks_never_double_grant_and_tokens_never_decrease(ops in proptest::collection::vec(op(), 1..80)) {
        let mut state = State::default();
        run(&mut state, 0, (0..4).map(|_| session(2_000)).collect());
        let mut time = 0u64;
        let mut last_tokens: BTreeMap<String, u64> = BTreeMap::new();
        // Every token ever granted belongs to exactly one (lock, session) grant.
        let mut owners: BTreeMap<u64, (String, SessionId)> = BTreeMap::new();
        for op in &ops {
            if let Op::Advance { ms } = op {
                time += u64::from(*ms);
            }
            let commands: Vec<Command> = command_for(&state, op).into_iter().collect();
            run(&mut state, time, commands);
            for (name, lock) in &state.locks {
                let exclusive = lock.holders.iter().filter(|h| h.mode == Exclusive).count();
                prop_assert!(exclusive <= 1, "{name}: two exclusive holders {:?}", lock.holders);
                prop_assert!(exclusive == 0 || lock.holders.len() == 1, "{name}: writer beside readers {:?}", lock.holders);
                let max = lock.holders.iter().map(|h| h.fencing_token).max().unwrap_or(0);
                let last = last_tokens.entry(name.clone()).or_default();
                prop_assert!(lock.last_token >= *last, "{name}: tokens went back");
                prop_assert!(max <= lock.last_token);
                *last = lock.last_token;
                if let Some(head) = lock.waiters.front() {
                    let blocked = match head.mode {
                        Exclusive => !lock.holders.is_empty(),
                        Shared => lock.holders.iter().any(|h| h.mode == Exclusive),
                    };
                    prop_assert!(blocked, "{name}: head waiter {head:?} could be granted");
                }
                for hold in &lock.holders {
                    prop_assert!(state.sessions.get(hold.session_id).is_some(), "a dead session holds {name}");
                    let owner = owners.entry(hold.fencing_token).or_insert((name.clone(), hold.session_id));
                    prop_assert_eq!(owner, &(name.clone(), hold.session_id), "token {} granted twice", hold.fencing_token);
                }
            }
        }
    }
}
