//! Unit tests of the events of apply: each command's events, in order, with the
//! index of the command that caused them, including those of expiry by ticks (a
//! session's end releases its locks, passes on its leadership, requeues its tasks
//! and deletes its ephemeral keys in the same index); refusals emit nothing; the
//! buffer is not state; two replicas emit the same sequence.

use super::events::{EventBody, LostReason, TYPE_NAMES};
use super::locks::LockMode;
use super::proposals::{NewProposal, ProposalCommand, Rule, Vote};
use super::tasks::{NewTask, TaskState};
use super::test_support::*;
use super::twophase::{Decision, NewTransaction, TwoPhaseCommand};
use super::{Command, State};

/// The events since the last call as (index, type), checking every type is known.
fn taken(state: &mut State) -> Vec<(u64, &'static str)> {
    state
        .take_events()
        .into_iter()
        .map(|event| {
            let name = event.body.type_name();
            assert!(TYPE_NAMES.contains(&name), "{name} is not in TYPE_NAMES");
            (event.index, name)
        })
        .collect()
}

fn bodies(state: &mut State) -> Vec<EventBody> {
    state.take_events().into_iter().map(|e| e.body).collect()
}

#[test]
fn kv_writes_deletes_and_an_ephemeral_keys_expiry_are_events_of_their_commands() {
    let mut state = State::default();
    let session = open_session(&mut state, 1, &[], 0, 1_000);
    assert_eq!(taken(&mut state), vec![(session, "session.opened")]);
    one(&mut state, 2, put("a", None));
    one(&mut state, 2, put("e", Some(session)));
    one(&mut state, 3, delete("a"));
    one(&mut state, 3, delete("missing"));
    let events = bodies(&mut state);
    assert!(
        matches!(&events[0], EventBody::KvPut { key, version: 2, session_id: None, .. } if key == "a")
    );
    assert!(matches!(&events[1], EventBody::KvPut { key, session_id: Some(_), .. } if key == "e"));
    assert!(matches!(&events[2], EventBody::KvDeleted { key, previous_version: 2 } if key == "a"));
    assert_eq!(events.len(), 3, "deleting a missing key changes nothing");
    // The session expires on a later tick: its end and its key's expiry share the
    // tick's own index.
    one(&mut state, 5_000, tick(&[]));
    let events = state.take_events();
    let index = events[0].index;
    assert_eq!(
        events
            .iter()
            .map(|e| e.body.type_name())
            .collect::<Vec<_>>(),
        vec!["session.expired", "kv.expired"]
    );
    assert!(events.iter().all(|e| e.index == index));
    assert!(index > 4 && index <= state.last_command_index);
}

#[test]
fn a_lock_is_granted_released_handed_to_its_waiter_and_lost_when_the_holder_expires() {
    let mut state = State::default();
    let a = open_session(&mut state, 1, &[], 0, 10_000);
    let b = open_session(&mut state, 1, &[], 0, 1_000);
    let c = open_session(&mut state, 1, &[], 0, 60_000);
    taken(&mut state);
    let token = granted_token(&one(
        &mut state,
        2,
        acquire_lock("L", a, LockMode::Exclusive, true),
    ));
    one(
        &mut state,
        2,
        acquire_lock("L", b, LockMode::Exclusive, true),
    );
    one(
        &mut state,
        2,
        acquire_lock("L", c, LockMode::Exclusive, true),
    );
    let release = state.last_command_index + 1;
    one(&mut state, 3, release_lock("L", a, token));
    let events = bodies(&mut state);
    assert_eq!(
        events.len(),
        3,
        "one grant, two queued, one release: {events:?}"
    );
    assert!(
        matches!(&events[1], EventBody::LockReleased { session_id, fencing_token, .. } if *session_id == a && *fencing_token == token)
    );
    let EventBody::LockGranted {
        session_id,
        fencing_token: b_token,
        ..
    } = &events[2]
    else {
        panic!("the waiter is granted: {events:?}");
    };
    assert_eq!(*session_id, b);
    assert_eq!(*b_token, release, "granted by the release, with its index");
    // b expires holding it: it loses it (the reason says why) and c gets it, all in
    // the tick's index.
    one(&mut state, 5_000, tick(&[]));
    let events = bodies(&mut state);
    assert!(events.contains(&EventBody::SessionExpired { session_id: b }));
    assert!(events.contains(&EventBody::LockLost {
        name: "L".into(),
        session_id: b,
        fencing_token: *b_token,
        reason: LostReason::SessionExpired,
    }));
    assert!(
        matches!(events.last(), Some(EventBody::LockGranted { session_id, .. }) if *session_id == c)
    );
    // Ending c's session explicitly is a loss for the other reason.
    one(&mut state, 5_001, end_session(c));
    let events = bodies(&mut state);
    assert!(
        matches!(&events[1], EventBody::LockLost { reason: LostReason::SessionEnded, session_id, .. } if *session_id == c)
    );
}

#[test]
fn a_tasks_life_is_told_submitted_assigned_claimed_and_then_how_it_ended() {
    let mut state = State::default();
    let worker = open_session(&mut state, 1, &["gpu"], 4, 60_000);
    taken(&mut state);
    let submitted = |state: &mut State, task: NewTask| match one(state, 2, submit(task)) {
        super::Outcome::Task(super::TaskOutcome::Submitted { task_id, .. }) => task_id,
        other => panic!("{other:?}"),
    };
    let done = submitted(&mut state, task_spec(&["gpu"]));
    assert_eq!(
        taken(&mut state),
        vec![(done, "task.submitted"), (done, "task.assigned")]
    );
    let token = match one(&mut state, 3, claim(worker)) {
        super::Outcome::Task(super::TaskOutcome::Claimed { fencing_token, .. }) => fencing_token,
        other => panic!("{other:?}"),
    };
    one(&mut state, 4, complete(done, token, "{}"));
    let names: Vec<_> = taken(&mut state).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, vec!["task.claimed", "task.succeeded"]);

    // Failed with retries left, then its lease lost, then out of attempts: dead.
    let flaky = submitted(
        &mut state,
        NewTask {
            max_attempts: 2,
            ..task_spec(&["gpu"])
        },
    );
    taken(&mut state);
    let token = state.tasks.get(flaky).unwrap().fencing_token;
    one(&mut state, 5, fail(flaky, token, true));
    assert_eq!(
        taken(&mut state)
            .into_iter()
            .map(|(_, n)| n)
            .collect::<Vec<_>>(),
        vec!["task.failed"]
    );
    // The backoff passes and it is assigned again; then its lease runs out.
    one(&mut state, 2_000, tick(&[]));
    assert!(taken(&mut state).iter().any(|(_, n)| *n == "task.assigned"));
    one(&mut state, 10_000, tick(&[]));
    let events = bodies(&mut state);
    assert!(
        matches!(&events[0], EventBody::TaskDead { task_id, reason, attempt: 2, .. } if *task_id == flaky && reason == "lease_expired"),
        "{events:?}"
    );

    // Cancelling an assigned task tells its worker first.
    let running = submitted(&mut state, task_spec(&["gpu"]));
    taken(&mut state);
    one(&mut state, 10_001, cancel(running));
    let events = bodies(&mut state);
    assert_eq!(
        events,
        vec![
            EventBody::TaskCancelRequested {
                task_id: running,
                kind: "job".into(),
                session_id: worker
            },
            EventBody::TaskCancelled {
                task_id: running,
                kind: "job".into(),
                session_id: Some(worker)
            },
        ]
    );
    assert_eq!(
        state.tasks.get(running).unwrap().state,
        TaskState::Cancelled
    );
}

#[test]
fn a_workers_end_requeues_its_task_as_retrying_with_the_reason() {
    let mut state = State::default();
    let worker = open_session(&mut state, 1, &[], 1, 60_000);
    one(&mut state, 2, submit(task_spec(&[])));
    taken(&mut state);
    one(&mut state, 3, end_session(worker));
    let events = bodies(&mut state);
    assert!(matches!(&events[0], EventBody::SessionEnded { session_id } if *session_id == worker));
    assert!(
        matches!(&events[1], EventBody::TaskRetrying { reason, session_id: Some(s), .. } if reason == "session_ended" && *s == worker)
    );
}

#[test]
fn semaphores_elections_and_barriers_tell_grants_losses_leaders_and_generations() {
    let mut state = State::default();
    let a = open_session(&mut state, 1, &[], 0, 1_000);
    let b = open_session(&mut state, 1, &[], 0, 60_000);
    taken(&mut state);
    one(&mut state, 2, acquire_permits(a, 2, 2, true));
    one(&mut state, 2, acquire_permits(b, 1, 2, true));
    one(&mut state, 2, campaign(a, 0, true));
    one(&mut state, 2, campaign(b, 0, true));
    one(&mut state, 2, arrive(a, 3));
    let names: Vec<_> = taken(&mut state).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, vec!["semaphore.granted", "election.leader"]);
    one(&mut state, 5_000, tick(&[]));
    let events = bodies(&mut state);
    let lost = |body: &EventBody| matches!(body, EventBody::SemaphoreLost { session_id, reason: LostReason::SessionExpired, .. } if *session_id == a);
    assert!(events.iter().any(lost), "{events:?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, EventBody::SemaphoreGranted { session_id, .. } if *session_id == b)));
    assert!(events.iter().any(|e| matches!(e, EventBody::BarrierBroken { session_id, generation: 0, .. } if *session_id == a)));
    assert!(events
        .iter()
        .any(|e| matches!(e, EventBody::ElectionLost { session_id, .. } if *session_id == a)));
    assert!(events
        .iter()
        .any(|e| matches!(e, EventBody::ElectionLeader { session_id: Some(s), .. } if *s == b)));
    // b resigns: nobody leads.
    let term = state
        .elections
        .get("E")
        .unwrap()
        .leader
        .as_ref()
        .unwrap()
        .term;
    one(&mut state, 5_001, resign(b, term));
    let events = bodies(&mut state);
    assert!(matches!(
        events.last(),
        Some(EventBody::ElectionLeader {
            session_id: None,
            term: 0,
            ..
        })
    ));
    // A barrier released by its last arrival.
    let c = open_session(&mut state, 5_002, &[], 0, 60_000);
    one(&mut state, 5_002, arrive(b, 2));
    one(&mut state, 5_002, arrive(c, 2));
    let events = bodies(&mut state);
    assert!(matches!(
        events.last(),
        Some(EventBody::BarrierReleased { generation: 1, .. })
    ));
}

#[test]
fn proposals_and_two_phase_transactions_are_told_when_created_and_decided() {
    let mut state = State::default();
    one(
        &mut state,
        1,
        Command::Proposal(ProposalCommand::Create(NewProposal {
            title: "ship?".into(),
            payload_json: "{}".into(),
            rule: Rule::Majority,
            voters: vec!["a".into()],
            voters_are_sessions: false,
            deadline_ms: 10_000,
            retention_ms: 1_000,
            created_by: None,
        })),
    );
    let proposal = state.last_command_index;
    one(
        &mut state,
        2,
        Command::Proposal(ProposalCommand::Vote {
            proposal_id: proposal,
            voter: "a".into(),
            vote: Vote::Yes,
            cast_by: None,
        }),
    );
    let events = bodies(&mut state);
    assert!(
        matches!(&events[0], EventBody::ProposalCreated { proposal_id, .. } if *proposal_id == proposal)
    );
    assert!(matches!(&events[1], EventBody::ProposalDecided { state, .. } if state == "accepted"));
    // A transaction nobody votes on aborts at its timeout, told once.
    one(
        &mut state,
        3,
        Command::TwoPhase(TwoPhaseCommand::Create(NewTransaction {
            participants: vec!["p".into(), "q".into()],
            participants_are_sessions: false,
            payload_json: "{}".into(),
            timeout_ms: 100,
            created_by: None,
        })),
    );
    let id = state.last_command_index;
    one(
        &mut state,
        4,
        Command::TwoPhase(TwoPhaseCommand::Vote {
            id,
            participant: "p".into(),
            decision: Decision::Commit,
            cast_by: None,
        }),
    );
    one(&mut state, 200, tick(&[]));
    one(&mut state, 300, tick(&[]));
    let events = bodies(&mut state);
    assert_eq!(
        events,
        vec![
            EventBody::TwoPhaseCreated { id },
            EventBody::TwoPhaseDecided {
                id,
                state: "aborted".into(),
                reason: Some("timeout".into())
            }
        ]
    );
}

#[test]
fn refusals_emit_nothing_and_the_buffer_is_not_state() {
    let mut state = State::default();
    one(&mut state, 1, release_lock("L", 7, 1));
    one(&mut state, 1, put("k", Some(99)));
    assert!(state.take_events().is_empty());
    let mut other = state.clone();
    one(&mut state, 2, put("k", None));
    one(&mut other, 2, put("k", None));
    // One has taken its events, the other not: still equal, and equally encoded.
    state.take_events();
    assert_eq!(state, other);
    assert_eq!(
        crate::codec::encode(&state).unwrap(),
        crate::codec::encode(&other).unwrap()
    );
}

#[test]
fn two_replicas_applying_the_same_batches_emit_the_same_events() {
    let mut a = State::default();
    let mut b = State::default();
    for state in [&mut a, &mut b] {
        let s = open_session(state, 1, &["x"], 2, 500);
        run(
            state,
            2,
            vec![
                submit(task_spec(&["x"])),
                acquire_lock("L", s, LockMode::Shared, true),
                put("e", Some(s)),
            ],
        );
        one(state, 5_000, tick(&[]));
    }
    let (ea, eb) = (a.take_events(), b.take_events());
    assert!(ea.len() >= 8, "{ea:?}");
    assert_eq!(ea, eb);
}

#[test]
fn a_membership_entry_takes_an_index_of_its_own() {
    let mut state = State::default();
    one(&mut state, 1, put("a", None));
    state.apply_membership(vec![1, 2], vec![3]);
    let events = state.take_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].index, 2);
    assert_eq!(
        events[1].body,
        EventBody::MembershipChanged {
            voters: vec![1, 2],
            learners: vec![3]
        }
    );
    assert_eq!(state.last_command_index, 2);
}

#[test]
fn every_event_type_is_named_once_and_in_a_watch_family() {
    let mut names = TYPE_NAMES.to_vec();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), TYPE_NAMES.len());
    for name in TYPE_NAMES {
        let family = name.split('.').next().unwrap();
        assert!(
            crate::server::watch::FAMILIES.contains(&family),
            "{name}'s family is not a watch family"
        );
    }
}

#[test]
fn every_event_type_is_documented_in_docs_watch_md() {
    let doc = include_str!("../../docs/watch.md");
    let missing: Vec<_> = TYPE_NAMES
        .iter()
        .filter(|name| !doc.contains(&format!("| `{name}` |")))
        .collect();
    assert!(missing.is_empty(), "docs/watch.md lacks {missing:?}");
}
