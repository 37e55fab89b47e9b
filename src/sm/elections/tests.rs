//! Unit tests of elections: the first campaigner leads, leadership passes on
//! resign (priority, then FIFO) and on session end.

use crate::sm::sessions::SessionCommand;
use crate::sm::test_support::{campaign, election_leader, resign};
use crate::sm::test_support::{one, with_sessions_ttl as with_sessions};
use crate::sm::*;
use crate::sm::{ElectionOutcome, Refusal};

#[test]
fn the_first_campaigner_leads_and_the_term_is_its_fencing_token() {
    let mut state = with_sessions(2, 60_000);
    let Outcome::Election(ElectionOutcome::Elected { term }) =
        one(&mut state, 1, campaign(1, 0, false))
    else {
        panic!()
    };
    assert_eq!(election_leader(&state), Some((1, term)));
    assert_eq!(
        one(&mut state, 2, campaign(1, 0, false)),
        Outcome::Election(ElectionOutcome::Elected { term }),
        "campaigning again is idempotent"
    );
    assert_eq!(
        one(&mut state, 3, campaign(2, 0, false)),
        Outcome::Election(ElectionOutcome::NotElected {
            leader_session_id: Some(1),
            term
        })
    );
}

#[test]
fn leadership_passes_on_resign_by_priority_then_fifo() {
    let mut state = with_sessions(4, 60_000);
    let Outcome::Election(ElectionOutcome::Elected { term }) =
        one(&mut state, 1, campaign(1, 0, false))
    else {
        panic!()
    };
    one(&mut state, 2, campaign(2, 0, true));
    one(&mut state, 3, campaign(3, 5, true));
    one(&mut state, 4, campaign(4, 5, true));
    assert_eq!(
        one(&mut state, 5, resign(1, term + 1)),
        Outcome::Refused(Refusal::StaleFencingToken { current: term })
    );
    assert_eq!(
        one(&mut state, 6, resign(1, term)),
        Outcome::Election(ElectionOutcome::Resigned)
    );
    let (next, next_term) = election_leader(&state).unwrap();
    assert_eq!(next, 3, "higher priority first, FIFO among equals");
    assert!(next_term > term);
    one(&mut state, 7, resign(3, next_term));
    assert_eq!(election_leader(&state).unwrap().0, 4);
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
    assert_eq!(election_leader(&state).map(|(s, _)| s), Some(2));
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
