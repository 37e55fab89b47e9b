//! Unit tests of proposals: the decision table and its edge cases, a brute-force
//! check that a decision is taken exactly when no remaining votes can change it,
//! votes (idempotent, no change, not a voter, after the decision, cast only by the
//! voter's subject), the deadline and retention by ticks, and session voters.

use super::rules::SESSION_ENDED;
use super::*;
use crate::limits::Replicated;
use crate::sm::test_support::{end_session, one, open_session, tick, FOREVER_MS};
use crate::sm::{Command, Outcome, Refusal, State, Submission};

fn counts(yes: u32, no: u32, abstain: u32) -> Counts {
    Counts { yes, no, abstain }
}

fn new(voters: &[&str], rule: Rule, deadline_ms: u64) -> NewProposal {
    NewProposal {
        title: "ship it?".into(),
        payload_json: r#"{"release":"1.2"}"#.into(),
        rule,
        voters: voters.iter().map(|v| v.to_string()).collect(),
        voters_are_sessions: false,
        deadline_ms,
        retention_ms: 1_000,
        created_by: Some("alice".into()),
    }
}

fn create(state: &mut State, at: u64, proposal: NewProposal) -> ProposalId {
    match one(
        state,
        at,
        Command::Proposal(ProposalCommand::Create(proposal)),
    ) {
        Outcome::Proposal(ProposalOutcome::Created { proposal_id, .. }) => proposal_id,
        other => panic!("not created: {other:?}"),
    }
}

fn vote(id: ProposalId, voter: &str, vote: Vote) -> Command {
    Command::Proposal(ProposalCommand::Vote {
        proposal_id: id,
        voter: voter.into(),
        vote,
        cast_by: Some(voter.into()),
    })
}

fn state_of(state: &State, id: ProposalId) -> ProposalState {
    state.proposals.get(id).expect("kept").state
}

#[test]
fn the_decision_table_and_its_edge_cases() {
    use ProposalState::{Accepted, Rejected};
    let rows: &[(Rule, u32, Counts, Option<ProposalState>)] = &[
        // majority of 5: 3 yes decides at once, 3 no too.
        (Rule::Majority, 5, counts(3, 0, 0), Some(Accepted)),
        (Rule::Majority, 5, counts(2, 0, 0), None),
        (Rule::Majority, 5, counts(0, 3, 0), Some(Rejected)),
        // abstentions shrink the electorate: 2 yes of the 4 who did not abstain is
        // not more than half, 2 yes of 3 is.
        (Rule::Majority, 5, counts(2, 2, 1), Some(Rejected)),
        (Rule::Majority, 5, counts(2, 1, 2), Some(Accepted)),
        (Rule::Majority, 4, counts(2, 2, 0), Some(Rejected)),
        // all abstain: nothing is accepted by no one.
        (Rule::Majority, 3, counts(0, 0, 3), Some(Rejected)),
        (Rule::Unanimous, 3, counts(0, 0, 3), Some(Rejected)),
        (Rule::Threshold(1), 3, counts(0, 0, 3), Some(Rejected)),
        // unanimous: one no rejects at once; yes from all who did not abstain.
        (Rule::Unanimous, 3, counts(2, 0, 0), None),
        (Rule::Unanimous, 3, counts(2, 1, 0), Some(Rejected)),
        (Rule::Unanimous, 3, counts(1, 0, 2), Some(Accepted)),
        (Rule::Unanimous, 3, counts(3, 0, 0), Some(Accepted)),
        // threshold: n yes accepts; too few voters left to reach it rejects.
        (Rule::Threshold(2), 5, counts(2, 0, 0), Some(Accepted)),
        (Rule::Threshold(2), 5, counts(1, 3, 0), None),
        (Rule::Threshold(2), 5, counts(1, 4, 0), Some(Rejected)),
        (Rule::Threshold(3), 3, counts(2, 0, 1), Some(Rejected)),
        (Rule::Majority, 1, counts(0, 0, 0), None),
    ];
    for (rule, voters, tally, expected) in rows {
        assert_eq!(
            decide(*rule, *voters, *tally),
            *expected,
            "{rule:?} of {voters} with {tally:?}"
        );
    }
}

/// Every complete tally reachable from `counts` by `remaining` more votes.
fn completions(counts: Counts, remaining: u32) -> Vec<Counts> {
    let mut all = Vec::new();
    for yes in 0..=remaining {
        for no in 0..=remaining - yes {
            let abstain = remaining - yes - no;
            all.push(Counts {
                yes: counts.yes + yes,
                no: counts.no + no,
                abstain: counts.abstain + abstain,
            });
        }
    }
    all
}

#[test]
fn a_proposal_is_decided_exactly_when_no_remaining_votes_can_change_the_outcome() {
    let mut checked = 0;
    for voters in 1..=6u32 {
        let mut rules = vec![Rule::Majority, Rule::Unanimous];
        rules.extend((1..=voters).map(Rule::Threshold));
        for rule in rules {
            for cast in 0..=voters {
                for partial in completions(Counts::default(), cast) {
                    let outcomes: std::collections::BTreeSet<bool> =
                        completions(partial, voters - cast)
                            .into_iter()
                            .map(|done| accepted(rule, voters, done))
                            .collect();
                    let expected = match (outcomes.len(), outcomes.contains(&true)) {
                        (1, true) => Some(ProposalState::Accepted),
                        (1, false) => Some(ProposalState::Rejected),
                        _ => None,
                    };
                    assert_eq!(
                        decide(rule, voters, partial),
                        expected,
                        "{rule:?} of {voters} with {partial:?}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 1_000, "{checked}");
}

#[test]
fn creation_refuses_what_could_never_be_decided_properly() {
    let mut state = State::default();
    let refused = |state: &mut State, proposal: NewProposal| {
        let outcome = one(
            state,
            1,
            Command::Proposal(ProposalCommand::Create(proposal)),
        );
        assert!(
            matches!(outcome, Outcome::Refused(Refusal::InvalidCommand { .. })),
            "{outcome:?}"
        );
    };
    refused(&mut state, new(&["a", "b"], Rule::Threshold(3), 1_000));
    refused(&mut state, new(&["a", "b"], Rule::Threshold(0), 1_000));
    refused(&mut state, new(&[], Rule::Majority, 1_000));
    refused(&mut state, new(&["a", "a"], Rule::Majority, 1_000));
    let mut sessions = new(&["x"], Rule::Majority, 1_000);
    sessions.voters_are_sessions = true;
    refused(&mut state, sessions.clone());
    sessions.voters = vec!["77".into()];
    assert_eq!(
        one(
            &mut state,
            1,
            Command::Proposal(ProposalCommand::Create(sessions))
        ),
        Outcome::Refused(Refusal::SessionNotFound { session_id: 77 })
    );
    assert!(state.proposals.is_empty());
}

#[test]
fn votes_are_counted_once_never_changed_and_stop_at_the_decision() {
    let mut state = State::default();
    let id = create(&mut state, 10, new(&["a", "b", "c"], Rule::Majority, 5_000));
    assert_eq!(id, 1, "a proposal's id is its creating command's index");
    let yes_a = one(&mut state, 11, vote(id, "a", Vote::Yes));
    let expected = Outcome::Proposal(ProposalOutcome::Voted {
        proposal_id: id,
        state: ProposalState::Open,
        counts: counts(1, 0, 0),
    });
    assert_eq!(yes_a, expected);
    assert_eq!(
        one(&mut state, 12, vote(id, "a", Vote::Yes)),
        expected,
        "same vote again"
    );
    assert_eq!(
        one(&mut state, 12, vote(id, "a", Vote::No)),
        Outcome::Proposal(ProposalOutcome::AlreadyVoted { vote: Vote::Yes })
    );
    assert_eq!(
        one(&mut state, 12, vote(id, "mallory", Vote::Yes)),
        Outcome::Proposal(ProposalOutcome::NotAVoter {
            voter: "mallory".into()
        })
    );
    assert_eq!(
        one(&mut state, 13, vote(id, "b", Vote::Yes)),
        Outcome::Proposal(ProposalOutcome::Voted {
            proposal_id: id,
            state: ProposalState::Accepted,
            counts: counts(2, 0, 0),
        }),
        "2 of 3 accepts at once"
    );
    assert_eq!(
        one(&mut state, 14, vote(id, "c", Vote::No)),
        Outcome::Proposal(ProposalOutcome::Decided {
            state: ProposalState::Accepted
        })
    );
    let proposal = state.proposals.get(id).unwrap();
    assert_eq!(
        proposal.votes.len(),
        2,
        "a vote after the decision is not counted"
    );
    assert_eq!(proposal.decided_at_index, Some(proposal.votes["b"].index));
    assert_eq!(proposal.votes["a"].index, 2);
    assert_eq!(proposal.votes["a"].cast_by.as_deref(), Some("a"));
    assert_eq!(proposal.decided_at_ms, Some(13));
    assert_eq!(
        one(&mut state, 14, vote(999, "a", Vote::Yes)),
        Outcome::Proposal(ProposalOutcome::NotFound { proposal_id: 999 })
    );
}

#[test]
fn an_undecided_proposal_expires_at_its_deadline_and_is_removed_after_retention() {
    let mut state = State::default();
    let id = create(
        &mut state,
        100,
        new(&["a", "b", "c"], Rule::Unanimous, 1_000),
    );
    one(&mut state, 200, vote(id, "a", Vote::Yes));
    one(&mut state, 1_099, tick(&[]));
    assert_eq!(
        state_of(&state, id),
        ProposalState::Open,
        "before the deadline"
    );
    assert_eq!(state.next_due_ms(), Some(1_100));
    one(&mut state, 1_100, tick(&[]));
    let proposal = state.proposals.get(id).unwrap();
    assert_eq!(proposal.state, ProposalState::Expired);
    assert_eq!(proposal.decided_at_ms, Some(1_100));
    assert_eq!(proposal.votes.len(), 1, "the tally stays as it was");
    assert_eq!(
        one(&mut state, 1_101, vote(id, "b", Vote::Yes)),
        Outcome::Proposal(ProposalOutcome::Decided {
            state: ProposalState::Expired
        })
    );
    // Retention (1 000 ms in `new`) counts from the decision.
    one(&mut state, 2_099, tick(&[]));
    assert!(state.proposals.get(id).is_some());
    one(&mut state, 2_100, tick(&[]));
    assert!(state.proposals.get(id).is_none());
    assert_eq!(state.proposals.of_voter("a", None).count(), 0);
    assert_eq!(state.next_due_ms(), None);
}

#[test]
fn a_session_voters_end_is_its_abstention_so_a_dead_agent_cannot_block_unanimity() {
    let mut state = State::default();
    let alive = open_session(&mut state, 0, &[], 0, FOREVER_MS);
    let dying = open_session(&mut state, 0, &[], 0, 1_000);
    let mut proposal = new(&[], Rule::Unanimous, 60_000);
    proposal.voters = vec![alive.to_string(), dying.to_string()];
    proposal.voters_are_sessions = true;
    let id = create(&mut state, 1, proposal);
    one(&mut state, 2, vote(id, &alive.to_string(), Vote::Yes));
    assert_eq!(state_of(&state, id), ProposalState::Open);
    // The dying session's TTL runs out: it abstains, and the rest are all yes.
    one(&mut state, 1_001, tick(&[]));
    assert!(state.sessions.get(dying).is_none());
    let proposal = state.proposals.get(id).unwrap();
    assert_eq!(proposal.state, ProposalState::Accepted);
    let cast = &proposal.votes[&dying.to_string()];
    assert_eq!(cast.vote, Vote::Abstain);
    assert_eq!(cast.cast_by.as_deref(), Some(SESSION_ENDED));
    assert_eq!(proposal.decided_at_index, Some(cast.index));
    // A voter that already voted keeps its vote when its session ends.
    let second = {
        let mut p = new(&[], Rule::Majority, 60_000);
        p.voters = vec![alive.to_string()];
        p.voters_are_sessions = true;
        p.rule = Rule::Threshold(1);
        create(&mut state, 2_000, p)
    };
    assert_eq!(state_of(&state, second), ProposalState::Open);
    one(&mut state, 2_001, end_session(alive));
    let proposal = state.proposals.get(second).unwrap();
    assert_eq!(proposal.votes[&alive.to_string()].vote, Vote::Abstain);
    assert_eq!(proposal.state, ProposalState::Rejected);
}

#[test]
fn a_named_voter_is_cast_only_by_its_subject_and_a_session_voter_by_its_owner() {
    let mut state = State::default();
    let id = create(
        &mut state,
        1,
        new(&["alice", "bob"], Rule::Unanimous, 60_000),
    );
    let as_subject = |acting_as: Option<&str>, voter: &str| Submission {
        request_id: Some(format!("r-{voter}")),
        guard: None,
        acting_as: acting_as.map(Into::into),
        command: vote(id, voter, Vote::Yes),
    };
    let outcomes = crate::sm::test_support::run_submissions(
        &mut state,
        2,
        vec![
            as_subject(Some("mallory"), "alice"),
            as_subject(Some("alice"), "bob"),
        ],
    );
    let refused = |party: &str| {
        Outcome::Refused(Refusal::NotTheParty {
            party: party.into(),
        })
    };
    assert_eq!(outcomes, vec![refused("alice"), refused("bob")]);
    assert!(state.proposals.get(id).unwrap().votes.is_empty());
    // Not remembered under the request id: the rightful voter's retry counts.
    let outcomes = crate::sm::test_support::run_submissions(
        &mut state,
        3,
        vec![as_subject(Some("alice"), "alice"), as_subject(None, "bob")],
    );
    assert!(matches!(
        outcomes[1],
        Outcome::Proposal(ProposalOutcome::Voted {
            state: ProposalState::Accepted,
            ..
        })
    ));
}

#[test]
fn proposals_are_capped_and_a_voter_finds_its_own() {
    let mut state = State::default();
    let a = create(&mut state, 1, new(&["x", "y"], Rule::Majority, 60_000));
    let b = create(&mut state, 1, new(&["y"], Rule::Majority, 60_000));
    let ids = |voter: &str, after| -> Vec<ProposalId> {
        state
            .proposals
            .of_voter(voter, after)
            .map(|p| p.id)
            .collect()
    };
    assert_eq!(ids("y", None), vec![a, b]);
    assert_eq!(ids("y", Some(a)), vec![b]);
    assert_eq!(ids("x", None), vec![a]);
    assert_eq!(ids("z", None), Vec::<ProposalId>::new());
    let mut full = State::default();
    let commands = (0..Replicated::MAX_PROPOSALS)
        .map(|_| Command::Proposal(ProposalCommand::Create(new(&["v"], Rule::Majority, 60_000))))
        .collect();
    crate::sm::test_support::run(&mut full, 1, commands);
    assert_eq!(full.proposals.len(), Replicated::MAX_PROPOSALS);
    let outcome = one(
        &mut full,
        2,
        Command::Proposal(ProposalCommand::Create(new(&["v"], Rule::Majority, 60_000))),
    );
    assert!(
        matches!(outcome, Outcome::Refused(Refusal::LimitReached { .. })),
        "{outcome:?}"
    );
}
