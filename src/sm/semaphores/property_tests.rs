//! Property test of semaphores and elections together (the two users of one
//! holder + waiter queue): random acquire / release / withdraw / session-end /
//! campaign / resign sequences.

use crate::sm::sessions::SessionCommand;
use proptest::prelude::*;

use super::SemaphoreCommand;
use crate::sm::elections::ElectionCommand;
use crate::sm::test_support::{acquire_permits, campaign, election_leader};
use crate::sm::test_support::{run, with_sessions_ttl as with_sessions};
use crate::sm::*;

#[derive(Debug, Clone)]
enum Op {
    Acquire {
        session: u8,
        permits: u8,
        wait: bool,
    },
    Release {
        session: u8,
    },
    Withdraw {
        nth: u8,
    },
    End {
        session: u8,
    },
    Campaign {
        session: u8,
        priority: i8,
    },
    Resign,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..6u8, 1..4u8, any::<bool>()).prop_map(|(session, permits, wait)| Op::Acquire { session, permits, wait }),
        3 => (1..6u8).prop_map(|session| Op::Release { session }),
        1 => (0..3u8).prop_map(|nth| Op::Withdraw { nth }),
        1 => (1..6u8).prop_map(|session| Op::End { session }),
        2 => (1..6u8, -2..3i8).prop_map(|(session, priority)| Op::Campaign { session, priority }),
        1 => Just(Op::Resign),
    ]
}

fn command_for(state: &State, op: &Op) -> Option<Command> {
    Some(match op {
        Op::Acquire {
            session,
            permits,
            wait,
        } => acquire_permits(u64::from(*session), u32::from(*permits), 3, *wait),
        Op::Release { session } => {
            let held = state
                .semaphores
                .get("S")?
                .holders
                .iter()
                .find(|p| p.session_id == u64::from(*session))?;
            Command::Semaphore(SemaphoreCommand::Release {
                name: "S".into(),
                session_id: held.session_id,
                fencing_token: held.fencing_token,
            })
        }
        Op::Withdraw { nth } => {
            let waiter = state.semaphores.get("S")?.waiters.get(usize::from(*nth))?;
            Command::Semaphore(SemaphoreCommand::Withdraw {
                name: "S".into(),
                waiter_id: waiter.waiter_id,
            })
        }
        Op::End { session } => Command::Session(SessionCommand::End {
            session_id: u64::from(*session),
        }),
        Op::Campaign { session, priority } => {
            campaign(u64::from(*session), i32::from(*priority), true)
        }
        Op::Resign => {
            let (session_id, term) = election_leader(state)?;
            Command::Election(ElectionCommand::Resign {
                name: "E".into(),
                session_id,
                term,
            })
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Holders never exceed the semaphore's limit, tokens and terms never decrease,
    /// a waiter that fits is never left waiting at the head, and an election has a
    /// leader whenever it has candidates.
    #[test]
    fn semaphores_never_exceed_their_limit_and_terms_never_decrease(ops in proptest::collection::vec(op(), 1..80)) {
        let mut state = with_sessions(5, 60_000);
        let (mut last_token, mut last_term) = (0u64, 0u64);
        for (step, op) in ops.iter().enumerate() {
            let commands: Vec<Command> = command_for(&state, op).into_iter().collect();
            run(&mut state, step as u64 + 1, commands);
            if let Some(semaphore) = state.semaphores.get("S") {
                prop_assert!(semaphore.used() <= semaphore.limit, "over the limit: {semaphore:?}");
                prop_assert!(semaphore.last_token >= last_token);
                last_token = semaphore.last_token;
                if let Some(head) = semaphore.waiters.front() {
                    prop_assert!(semaphore.used() + head.permits > semaphore.limit, "head waiter fits: {semaphore:?}");
                }
            }
            if let Some(election) = state.elections.get("E") {
                prop_assert!(election.leader.is_some() || election.candidates.is_empty(), "candidates without a leader");
                prop_assert!(election.last_term >= last_term);
                last_term = election.last_term;
                if let Some(leader) = &election.leader {
                    prop_assert!(state.sessions.get(leader.session_id).is_some(), "an ended session leads");
                }
            }
        }
    }
}
