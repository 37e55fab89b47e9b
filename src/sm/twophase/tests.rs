//! Unit tests of two-phase commit: every transition (all commit, one abort, a
//! missing vote at the timeout, a session participant's end), idempotent and
//! unchangeable votes, acks and the record kept until all acked, the cap, and the
//! party rule.

use super::*;
use crate::limits::Replicated;
use crate::sm::test_support::FOREVER_MS;
use crate::sm::test_support::{end_session, one, open_session, run, run_submissions, tick};
use crate::sm::{Command, Outcome, Refusal, State, Submission};

fn new(participants: &[&str], timeout_ms: u64) -> NewTransaction {
    NewTransaction {
        participants: participants.iter().map(|p| p.to_string()).collect(),
        participants_are_sessions: false,
        payload_json: r#"{"migration":7}"#.into(),
        timeout_ms,
        created_by: Some("coordinator".into()),
    }
}

fn create(state: &mut State, at: u64, transaction: NewTransaction) -> TransactionId {
    match one(
        state,
        at,
        Command::TwoPhase(TwoPhaseCommand::Create(transaction)),
    ) {
        Outcome::TwoPhase(TwoPhaseOutcome::Created { id }) => id,
        other => panic!("not created: {other:?}"),
    }
}

fn vote(id: TransactionId, participant: &str, decision: Decision) -> Command {
    Command::TwoPhase(TwoPhaseCommand::Vote {
        id,
        participant: participant.into(),
        decision,
        cast_by: Some(participant.into()),
    })
}

fn ack(id: TransactionId, participant: &str) -> Command {
    Command::TwoPhase(TwoPhaseCommand::Ack {
        id,
        participant: participant.into(),
    })
}

fn voted(id: TransactionId, state: TwoPhaseState) -> Outcome {
    Outcome::TwoPhase(TwoPhaseOutcome::Voted { id, state })
}

#[test]
fn all_commit_commits_and_the_record_stays_until_every_participant_acked() {
    let mut state = State::default();
    let id = create(&mut state, 1, new(&["a", "b", "c"], 10_000));
    assert_eq!(
        one(&mut state, 2, ack(id, "a")),
        Outcome::TwoPhase(TwoPhaseOutcome::NotDecided)
    );
    assert_eq!(
        one(&mut state, 2, vote(id, "a", Decision::Commit)),
        voted(id, TwoPhaseState::Preparing)
    );
    assert_eq!(
        one(&mut state, 3, vote(id, "a", Decision::Commit)),
        voted(id, TwoPhaseState::Preparing),
        "same vote again"
    );
    assert_eq!(
        one(&mut state, 3, vote(id, "a", Decision::Abort)),
        Outcome::TwoPhase(TwoPhaseOutcome::AlreadyVoted {
            decision: Decision::Commit
        })
    );
    one(&mut state, 4, vote(id, "b", Decision::Commit));
    assert_eq!(
        one(&mut state, 5, vote(id, "c", Decision::Commit)),
        voted(id, TwoPhaseState::Committed)
    );
    let transaction = state.two_phase.get(id).unwrap();
    assert_eq!(transaction.reason, None);
    assert_eq!(
        transaction.decided_at_index,
        Some(transaction.votes["c"].index)
    );
    assert_eq!(state.next_due_ms(), None, "no timeout once decided");
    let acked = |removed| {
        Outcome::TwoPhase(TwoPhaseOutcome::Acked {
            id,
            state: TwoPhaseState::Committed,
            removed,
        })
    };
    assert_eq!(one(&mut state, 6, ack(id, "a")), acked(false));
    assert_eq!(
        one(&mut state, 6, ack(id, "a")),
        acked(false),
        "an ack again is harmless"
    );
    assert_eq!(one(&mut state, 7, ack(id, "b")), acked(false));
    // However long it takes, an unacked record is kept.
    one(&mut state, 10_000_000, tick(&[]));
    assert_eq!(
        state.two_phase.get(id).unwrap().state,
        TwoPhaseState::Committed
    );
    assert_eq!(one(&mut state, 10_000_001, ack(id, "c")), acked(true));
    assert!(state.two_phase.is_empty());
    assert_eq!(state.two_phase.of_participant("a", None).count(), 0);
    assert_eq!(
        one(&mut state, 10_000_002, ack(id, "c")),
        Outcome::TwoPhase(TwoPhaseOutcome::NotFound { id })
    );
}

#[test]
fn one_abort_aborts_at_once_and_later_votes_are_not_counted() {
    let mut state = State::default();
    let id = create(&mut state, 1, new(&["a", "b", "c", "d", "e"], 10_000));
    one(&mut state, 2, vote(id, "a", Decision::Commit));
    assert_eq!(
        one(&mut state, 3, vote(id, "b", Decision::Abort)),
        voted(id, TwoPhaseState::Aborted)
    );
    assert_eq!(
        one(&mut state, 4, vote(id, "c", Decision::Commit)),
        Outcome::TwoPhase(TwoPhaseOutcome::Decided {
            state: TwoPhaseState::Aborted
        })
    );
    let transaction = state.two_phase.get(id).unwrap();
    assert_eq!(transaction.reason, Some(AbortReason::Vote));
    assert_eq!(transaction.votes.len(), 2);
    assert_eq!(
        one(&mut state, 4, vote(id, "zed", Decision::Commit)),
        Outcome::TwoPhase(TwoPhaseOutcome::NotAParticipant {
            participant: "zed".into()
        })
    );
}

#[test]
fn a_missing_vote_at_the_timeout_aborts() {
    let mut state = State::default();
    let id = create(&mut state, 100, new(&["a", "b"], 500));
    one(&mut state, 200, vote(id, "a", Decision::Commit));
    assert_eq!(state.next_due_ms(), Some(600));
    one(&mut state, 599, tick(&[]));
    assert_eq!(
        state.two_phase.get(id).unwrap().state,
        TwoPhaseState::Preparing
    );
    one(&mut state, 600, tick(&[]));
    let transaction = state.two_phase.get(id).unwrap();
    assert_eq!(
        (transaction.state, transaction.reason),
        (TwoPhaseState::Aborted, Some(AbortReason::Timeout))
    );
    assert_eq!(
        one(&mut state, 601, vote(id, "b", Decision::Commit)),
        Outcome::TwoPhase(TwoPhaseOutcome::Decided {
            state: TwoPhaseState::Aborted
        })
    );
}

#[test]
fn a_session_participant_ending_before_it_voted_aborts_and_its_end_counts_as_its_ack() {
    let mut state = State::default();
    let a = open_session(&mut state, 0, &[], 0, FOREVER_MS);
    let b = open_session(&mut state, 0, &[], 0, FOREVER_MS);
    let mut transaction = new(&[], 60_000);
    transaction.participants = vec![a.to_string(), b.to_string()];
    transaction.participants_are_sessions = true;
    let id = create(&mut state, 1, transaction.clone());
    one(&mut state, 2, vote(id, &a.to_string(), Decision::Commit));
    one(&mut state, 3, end_session(b));
    let t = state.two_phase.get(id).unwrap();
    assert_eq!(
        (t.state, t.reason),
        (TwoPhaseState::Aborted, Some(AbortReason::SessionEnded))
    );
    assert!(t.acks.contains(&b.to_string()));
    one(&mut state, 4, ack(id, &a.to_string()));
    assert!(state.two_phase.get(id).is_none(), "both acked: removed");
    // A participant that voted before its session ended changes nothing.
    let c = open_session(&mut state, 5, &[], 0, FOREVER_MS);
    transaction.participants = vec![a.to_string(), c.to_string()];
    let id = create(&mut state, 6, transaction);
    one(&mut state, 7, vote(id, &c.to_string(), Decision::Commit));
    one(&mut state, 8, end_session(c));
    assert_eq!(
        state.two_phase.get(id).unwrap().state,
        TwoPhaseState::Preparing
    );
    one(&mut state, 9, vote(id, &a.to_string(), Decision::Commit));
    assert_eq!(
        state.two_phase.get(id).unwrap().state,
        TwoPhaseState::Committed
    );
    // Creating with a session that is gone is refused.
    let mut gone = new(&[], 60_000);
    gone.participants = vec![c.to_string()];
    gone.participants_are_sessions = true;
    assert_eq!(
        one(
            &mut state,
            10,
            Command::TwoPhase(TwoPhaseCommand::Create(gone))
        ),
        Outcome::Refused(Refusal::SessionNotFound { session_id: c })
    );
}

#[test]
fn a_named_participant_votes_and_acks_only_as_its_subject() {
    let mut state = State::default();
    let id = create(&mut state, 1, new(&["db", "cache"], 60_000));
    let acting = |subject: &str, command: Command| Submission {
        request_id: None,
        guard: None,
        acting_as: Some(subject.into()),
        command,
    };
    let outcomes = run_submissions(
        &mut state,
        2,
        vec![
            acting("cache", vote(id, "db", Decision::Abort)),
            acting("db", vote(id, "db", Decision::Commit)),
            acting("cache", vote(id, "cache", Decision::Commit)),
            acting("db", ack(id, "cache")),
        ],
    );
    assert_eq!(
        outcomes[0],
        Outcome::Refused(Refusal::NotTheParty { party: "db".into() })
    );
    assert_eq!(outcomes[2], voted(id, TwoPhaseState::Committed));
    assert_eq!(
        outcomes[3],
        Outcome::Refused(Refusal::NotTheParty {
            party: "cache".into()
        })
    );
}

#[test]
fn open_records_are_capped_and_a_full_store_refuses_rather_than_drops() {
    let mut state = State::default();
    let commands = (0..Replicated::MAX_TWO_PHASE)
        .map(|_| Command::TwoPhase(TwoPhaseCommand::Create(new(&["p"], 60_000))))
        .collect();
    run(&mut state, 1, commands);
    assert_eq!(state.two_phase.len(), Replicated::MAX_TWO_PHASE);
    let outcome = one(
        &mut state,
        2,
        Command::TwoPhase(TwoPhaseCommand::Create(new(&["p"], 60_000))),
    );
    assert!(
        matches!(outcome, Outcome::Refused(Refusal::LimitReached { .. })),
        "{outcome:?}"
    );
    // The timeout aborts them all in bounded steps; none is dropped unacked.
    one(&mut state, 60_001, tick(&[]));
    assert_eq!(state.two_phase.len(), Replicated::MAX_TWO_PHASE);
    assert!(state
        .two_phase
        .range_from(None)
        .all(|t| t.state == TwoPhaseState::Aborted));
    let first = state.two_phase.range_from(None).next().unwrap().id;
    one(&mut state, 60_002, ack(first, "p"));
    assert_eq!(state.two_phase.len(), Replicated::MAX_TWO_PHASE - 1);
    assert_eq!(
        state.two_phase.of_participant("p", None).count(),
        Replicated::MAX_TWO_PHASE - 1
    );
}
