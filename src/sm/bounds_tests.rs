//! Bounded cost (issue #11): the replicated count limits (keys, resources per room,
//! waiters per resource) refuse one more with `LimitReached` (429, not remembered),
//! and a session's end visits only the semaphores, barriers and elections it joined
//! (`Session::joined`), which it keeps in step with what it holds and awaits.

use super::barriers::BarrierCommand;
use super::elections::ElectionCommand;
use super::locks::LockMode;
use super::semaphores::SemaphoreCommand;
use super::sessions::{Room, SessionId};
use super::test_support::*;
use super::{Command, Outcome, Refusal, State};
use crate::limits::Replicated;

fn new_session(state: &mut State, time_ms: u64) -> SessionId {
    open_session(state, time_ms, &[], 0, FOREVER_MS)
}

fn acquire_permits_named(name: &str, session_id: SessionId, permits: u32, limit: u32) -> Command {
    Command::Semaphore(SemaphoreCommand::Acquire {
        name: name.into(),
        session_id,
        permits,
        limit,
        wait: true,
    })
}

fn release_permits_named(name: &str, session_id: SessionId, fencing_token: u64) -> Command {
    Command::Semaphore(SemaphoreCommand::Release {
        name: name.into(),
        session_id,
        fencing_token,
    })
}

fn campaign_named(name: &str, session_id: SessionId) -> Command {
    Command::Election(ElectionCommand::Campaign {
        name: name.into(),
        session_id,
        value_json: "1".into(),
        priority: 0,
        wait: true,
    })
}

fn resign_named(name: &str, session_id: SessionId, term: u64) -> Command {
    Command::Election(ElectionCommand::Resign {
        name: name.into(),
        session_id,
        term,
    })
}

fn arrive_named(name: &str, session_id: SessionId, parties: u32) -> Command {
    Command::Barrier(BarrierCommand::Wait {
        name: name.into(),
        session_id,
        parties,
    })
}

fn limit_reached(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Refused(Refusal::LimitReached { .. }))
}

fn joined(state: &State, session: u64) -> Vec<(Room, String)> {
    let session = state.sessions.get(session).expect("live");
    session.joined.iter().cloned().collect()
}

#[test]
fn a_session_records_what_it_joins_and_forgets_what_it_leaves() {
    let mut state = State::default();
    let (a, b) = (new_session(&mut state, 10), new_session(&mut state, 10));
    let granted = one(&mut state, 100, acquire_permits_named("s", a, 1, 1));
    assert!(
        joined(&state, a).contains(&(Room::Semaphore, "s".into())),
        "{granted:?}"
    );
    // b waits on the full semaphore: joined too; a's release grants b.
    one(&mut state, 110, acquire_permits_named("s", b, 1, 1));
    assert_eq!(joined(&state, b), vec![(Room::Semaphore, "s".into())]);
    let token = match granted {
        Outcome::Semaphore(crate::sm::SemaphoreOutcome::Granted { fencing_token }) => fencing_token,
        other => panic!("{other:?}"),
    };
    one(&mut state, 120, release_permits_named("s", a, token));
    assert!(joined(&state, a).is_empty());
    let won = one(&mut state, 130, campaign_named("e", a));
    assert_eq!(joined(&state, a), vec![(Room::Election, "e".into())]);
    let term = match won {
        Outcome::Election(crate::sm::ElectionOutcome::Elected { term }) => term,
        other => panic!("{other:?}"),
    };
    one(&mut state, 140, resign_named("e", a, term));
    assert!(joined(&state, a).is_empty());
    one(&mut state, 150, arrive_named("b", a, 2));
    assert_eq!(joined(&state, a), vec![(Room::Barrier, "b".into())]);
}

#[test]
fn ending_a_session_frees_everything_it_joined_and_touches_nothing_else() {
    let mut state = State::default();
    let sessions: Vec<u64> = (0..6).map(|_| new_session(&mut state, 10)).collect();
    let mut time = 100;
    for (i, &session) in sessions.iter().enumerate() {
        for name in ["s1", "s2", "s3"] {
            time += 1;
            one(&mut state, time, acquire_permits_named(name, session, 1, 2));
        }
        time += 1;
        one(
            &mut state,
            time,
            campaign_named(&format!("e{}", i % 2), session),
        );
        time += 1;
        one(&mut state, time, arrive_named("gather", session, 10));
        time += 1;
        one(
            &mut state,
            time,
            acquire_lock("L", session, LockMode::Shared, true),
        );
    }
    let before = state.clone();
    let ending = sessions[0];
    one(&mut state, time + 1, end_session(ending));
    for (name, semaphore) in &state.semaphores {
        assert!(
            semaphore.holders.iter().all(|p| p.session_id != ending),
            "{name}"
        );
        assert!(
            semaphore.waiters.iter().all(|w| w.session_id != ending),
            "{name}"
        );
        // The freed permit went to the next waiter.
        assert_eq!(semaphore.holders.len(), 2, "{name}");
    }
    for (name, election) in &state.elections {
        assert!(
            election
                .leader
                .as_ref()
                .is_none_or(|l| l.session_id != ending),
            "{name}"
        );
        assert!(
            election.candidates.iter().all(|c| c.session_id != ending),
            "{name}"
        );
        assert!(
            election.leader.is_some(),
            "{name}: the next candidate leads"
        );
    }
    let gather = &state.barriers["gather"];
    assert!(gather.arrived.is_empty(), "the generation broke");
    assert_eq!(gather.generation, before.barriers["gather"].generation + 1);
    // The other sessions' records are untouched.
    for &session in &sessions[1..] {
        assert_eq!(state.sessions.get(session), before.sessions.get(session));
    }
}

#[test]
fn one_more_waiter_than_the_limit_is_refused_and_not_queued() {
    let mut state = State::default();
    let holder = new_session(&mut state, 10);
    one(
        &mut state,
        100,
        acquire_lock("L", holder, LockMode::Exclusive, false),
    );
    one(&mut state, 100, acquire_permits_named("S", holder, 1, 1));
    let waiters = open_sessions(&mut state, 100, Replicated::MAX_WAITERS + 1, FOREVER_MS);
    let locks: Vec<_> = waiters
        .iter()
        .map(|&w| acquire_lock("L", w, LockMode::Exclusive, true))
        .collect();
    let outcomes = run(&mut state, 200, locks);
    assert!(outcomes[..Replicated::MAX_WAITERS]
        .iter()
        .all(|o| !limit_reached(o)));
    assert!(limit_reached(&outcomes[Replicated::MAX_WAITERS]));
    assert_eq!(
        state.locks.get("L").unwrap().waiters.len(),
        Replicated::MAX_WAITERS
    );
    let permits: Vec<_> = waiters
        .iter()
        .map(|&w| acquire_permits_named("S", w, 1, 1))
        .collect();
    let outcomes = run(&mut state, 300, permits);
    assert!(limit_reached(&outcomes[Replicated::MAX_WAITERS]));
    assert_eq!(state.semaphores["S"].waiters.len(), Replicated::MAX_WAITERS);
    let last = *waiters.last().unwrap();
    assert!(
        joined(&state, last).is_empty(),
        "a refused waiter joined nothing"
    );
}

#[test]
fn one_more_resource_than_the_limit_is_refused_until_one_goes() {
    let mut state = State::default();
    let session = new_session(&mut state, 10);
    let acquires: Vec<_> = (0..=Replicated::MAX_RESOURCES_PER_ROOM)
        .map(|i| acquire_permits_named(&format!("s{i}"), session, 1, 1))
        .collect();
    let outcomes = run(&mut state, 100, acquires);
    assert!(limit_reached(outcomes.last().unwrap()));
    assert_eq!(state.semaphores.len(), Replicated::MAX_RESOURCES_PER_ROOM);
    // Ending the session frees them all (it visits the 100 000 it joined), and a new
    // semaphore is admitted again.
    one(&mut state, 200, end_session(session));
    assert!(state.semaphores.is_empty());
    let other = new_session(&mut state, 10);
    let outcome = one(&mut state, 300, acquire_permits_named("again", other, 1, 1));
    assert!(!limit_reached(&outcome), "{outcome:?}");
}

#[test]
fn one_more_key_than_the_limit_is_refused_but_existing_keys_still_change() {
    let mut state = State::default();
    for chunk in (0..Replicated::MAX_KEYS).collect::<Vec<_>>().chunks(50_000) {
        let puts = chunk.iter().map(|i| put(&format!("k{i}"), None)).collect();
        run(&mut state, 100, puts);
    }
    assert_eq!(state.kv.len(), Replicated::MAX_KEYS);
    assert!(limit_reached(&one(&mut state, 200, put("one-more", None))));
    assert!(!limit_reached(&one(&mut state, 200, put("k7", None))));
    one(&mut state, 300, delete("k7"));
    assert!(!limit_reached(&one(&mut state, 300, put("one-more", None))));
}
