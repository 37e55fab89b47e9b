//! Unit and property tests of semaphores, barriers and elections, without Raft.

use crate::sm::sessions::SessionCommand;
use proptest::prelude::*;

use super::sessions::SessionId;
use super::test_support::{one, run, with_sessions_ttl as with_sessions};
use super::*;

fn acquire(session_id: SessionId, permits: u32, limit: u32, wait: bool) -> Command {
    Command::SemaphoreAcquire {
        name: "S".into(),
        session_id,
        permits,
        limit,
        wait,
    }
}

fn arrive(session_id: SessionId, parties: u32) -> Command {
    Command::BarrierWait {
        name: "B".into(),
        session_id,
        parties,
    }
}

fn campaign(session_id: SessionId, priority: i32, wait: bool) -> Command {
    Command::Campaign {
        name: "E".into(),
        session_id,
        value_json: format!("\"n{session_id}\""),
        priority,
        wait,
    }
}

fn leader(state: &State) -> Option<(SessionId, u64)> {
    state
        .elections
        .get("E")
        .and_then(|e| e.leader.as_ref())
        .map(|l| (l.session_id, l.term))
}

#[test]
fn weighted_permits_are_granted_within_the_limit_and_fifo() {
    let mut state = with_sessions(3, 60_000);
    let first = one(&mut state, 1, acquire(1, 2, 3, false));
    assert!(matches!(first, Outcome::PermitsGranted { .. }));
    assert_eq!(
        one(&mut state, 2, acquire(2, 2, 3, false)),
        Outcome::PermitsUnavailable
    );
    assert!(matches!(
        one(&mut state, 3, acquire(2, 2, 3, true)),
        Outcome::PermitsQueued { .. }
    ));
    // FIFO: a 1-permit request that would fit waits behind the queued 2-permit one.
    assert!(matches!(
        one(&mut state, 4, acquire(3, 1, 3, true)),
        Outcome::PermitsQueued { .. }
    ));
    let Outcome::PermitsGranted { fencing_token } = first else {
        unreachable!()
    };
    let released = one(
        &mut state,
        5,
        Command::SemaphoreRelease {
            name: "S".into(),
            session_id: 1,
            fencing_token,
        },
    );
    assert_eq!(released, Outcome::PermitsReleased);
    let holders: Vec<(SessionId, u32)> = state.semaphores["S"]
        .holders
        .iter()
        .map(|p| (p.session_id, p.permits))
        .collect();
    assert_eq!(holders, vec![(2, 2), (3, 1)]);
}

#[test]
fn the_first_acquirer_fixes_the_limit_and_a_different_one_is_refused() {
    let mut state = with_sessions(2, 60_000);
    one(&mut state, 1, acquire(1, 1, 3, false));
    assert_eq!(
        one(&mut state, 2, acquire(2, 1, 4, false)),
        Outcome::LimitMismatch { limit: 3 }
    );
    assert!(matches!(
        one(&mut state, 3, acquire(2, 4, 3, false)),
        Outcome::InvalidCommand { .. }
    ));
}

#[test]
fn a_session_end_returns_its_permits_and_a_permit_guard_goes_stale() {
    let mut state = with_sessions(2, 60_000);
    let Outcome::PermitsGranted { fencing_token } = one(&mut state, 1, acquire(1, 3, 3, false))
    else {
        panic!()
    };
    one(&mut state, 2, acquire(2, 1, 3, true));
    let guarded = Proposal {
        request_id: None,
        guard: Some(Guard {
            kind: GuardKind::Semaphore,
            name: "S".into(),
            fencing_token,
        }),
        command: Command::Kv(crate::sm::kv::KvCommand::Put {
            key: "k".into(),
            value_json: "1".into(),
            if_version: None,
            session_id: None,
        }),
    };
    let ok = state.apply_batch(&Batch {
        leader_time_ms: 3,
        proposals: vec![guarded.clone()],
    });
    assert!(matches!(ok.results[0].outcome, Outcome::KvWritten { .. }));
    one(
        &mut state,
        4,
        Command::Session(SessionCommand::End { session_id: 1 }),
    );
    assert_eq!(
        state.semaphores["S"].holders[0].session_id, 2,
        "the waiter got the freed permits"
    );
    let late = state.apply_batch(&Batch {
        leader_time_ms: 5,
        proposals: vec![guarded],
    });
    assert!(matches!(
        late.results[0].outcome,
        Outcome::StaleFencingToken { .. }
    ));
}

#[test]
fn a_barrier_releases_its_generation_when_all_parties_arrive() {
    let mut state = with_sessions(3, 60_000);
    assert_eq!(
        one(&mut state, 1, arrive(1, 3)),
        Outcome::BarrierWaiting { generation: 0 }
    );
    assert_eq!(
        one(&mut state, 1, arrive(1, 3)),
        Outcome::BarrierWaiting { generation: 0 },
        "arriving twice counts once"
    );
    assert_eq!(
        one(&mut state, 2, arrive(2, 3)),
        Outcome::BarrierWaiting { generation: 0 }
    );
    assert_eq!(
        one(&mut state, 3, arrive(3, 3)),
        Outcome::BarrierReleased { generation: 0 }
    );
    let barrier = &state.barriers["B"];
    assert_eq!(
        (
            barrier.generation,
            barrier.arrived.len(),
            barrier.ended.get(&0)
        ),
        (1, 0, Some(&false))
    );
    assert!(matches!(
        one(&mut state, 4, arrive(1, 4)),
        Outcome::BarrierWaiting { generation: 1 }
    ));
    assert!(
        matches!(one(&mut state, 5, arrive(2, 3)), Outcome::WrongState { .. }),
        "parties are fixed per generation"
    );
}

#[test]
fn a_participants_session_ending_breaks_the_generation() {
    let mut state = with_sessions(3, 1_000);
    one(&mut state, 1, arrive(1, 3));
    one(&mut state, 1, arrive(2, 3));
    // Sessions expire at 1_000.
    run(&mut state, 1_000, vec![]);
    let barrier = &state.barriers["B"];
    assert_eq!(barrier.ended.get(&0), Some(&true), "generation 0 broken");
    assert_eq!(barrier.generation, 1);
}

#[test]
fn leaving_an_unreleased_generation_withdraws_and_a_released_one_reports_it() {
    let mut state = with_sessions(2, 60_000);
    one(&mut state, 1, arrive(1, 2));
    assert_eq!(
        one(
            &mut state,
            2,
            Command::BarrierLeave {
                name: "B".into(),
                session_id: 1,
                generation: 0
            }
        ),
        Outcome::Withdrawn
    );
    assert!(state.barriers["B"].arrived.is_empty());
    one(&mut state, 3, arrive(1, 2));
    one(&mut state, 4, arrive(2, 2));
    let late = one(
        &mut state,
        5,
        Command::BarrierLeave {
            name: "B".into(),
            session_id: 1,
            generation: 0,
        },
    );
    assert_eq!(late, Outcome::BarrierReleased { generation: 0 });
}

#[test]
fn the_first_campaigner_leads_and_the_term_is_its_fencing_token() {
    let mut state = with_sessions(2, 60_000);
    let Outcome::Elected { term } = one(&mut state, 1, campaign(1, 0, false)) else {
        panic!()
    };
    assert_eq!(leader(&state), Some((1, term)));
    assert_eq!(
        one(&mut state, 2, campaign(1, 0, false)),
        Outcome::Elected { term },
        "campaigning again is idempotent"
    );
    assert_eq!(
        one(&mut state, 3, campaign(2, 0, false)),
        Outcome::NotElected {
            leader_session_id: Some(1),
            term
        }
    );
}

#[test]
fn leadership_passes_on_resign_by_priority_then_fifo() {
    let mut state = with_sessions(4, 60_000);
    let Outcome::Elected { term } = one(&mut state, 1, campaign(1, 0, false)) else {
        panic!()
    };
    one(&mut state, 2, campaign(2, 0, true));
    one(&mut state, 3, campaign(3, 5, true));
    one(&mut state, 4, campaign(4, 5, true));
    assert_eq!(
        one(
            &mut state,
            5,
            Command::Resign {
                name: "E".into(),
                session_id: 1,
                term: term + 1
            }
        ),
        Outcome::StaleFencingToken { current: term }
    );
    assert_eq!(
        one(
            &mut state,
            6,
            Command::Resign {
                name: "E".into(),
                session_id: 1,
                term
            }
        ),
        Outcome::Resigned
    );
    let (next, next_term) = leader(&state).unwrap();
    assert_eq!(next, 3, "higher priority first, FIFO among equals");
    assert!(next_term > term);
    one(
        &mut state,
        7,
        Command::Resign {
            name: "E".into(),
            session_id: 3,
            term: next_term,
        },
    );
    assert_eq!(leader(&state).unwrap().0, 4);
}

#[test]
fn leadership_passes_when_the_leaders_session_ends() {
    let mut state = with_sessions(2, 60_000);
    one(&mut state, 1, campaign(1, 0, false));
    one(&mut state, 2, campaign(2, 0, true));
    one(
        &mut state,
        3,
        Command::Session(SessionCommand::End { session_id: 1 }),
    );
    assert_eq!(leader(&state).map(|(s, _)| s), Some(2));
    one(
        &mut state,
        4,
        Command::Session(SessionCommand::End { session_id: 2 }),
    );
    assert!(
        !state.elections.contains_key("E"),
        "an election nobody is in is forgotten"
    );
}

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
        } => acquire(u64::from(*session), u32::from(*permits), 3, *wait),
        Op::Release { session } => {
            let held = state
                .semaphores
                .get("S")?
                .holders
                .iter()
                .find(|p| p.session_id == u64::from(*session))?;
            Command::SemaphoreRelease {
                name: "S".into(),
                session_id: held.session_id,
                fencing_token: held.fencing_token,
            }
        }
        Op::Withdraw { nth } => {
            let waiter = state.semaphores.get("S")?.waiters.get(usize::from(*nth))?;
            Command::SemaphoreWithdraw {
                name: "S".into(),
                waiter_id: waiter.waiter_id,
            }
        }
        Op::End { session } => Command::Session(SessionCommand::End {
            session_id: u64::from(*session),
        }),
        Op::Campaign { session, priority } => {
            campaign(u64::from(*session), i32::from(*priority), true)
        }
        Op::Resign => {
            let (session_id, term) = leader(state)?;
            Command::Resign {
                name: "E".into(),
                session_id,
                term,
            }
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
