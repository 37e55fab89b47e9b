//! Sessions: create, keepalive, tick renewals, expiry at the first batch that
//! reaches it, end; and which timer falls due next.

use crate::sm::tasks::NewTask;
use crate::sm::test_support::{
    caps, create_session, end_session, keepalive, put, task_spec, tick, Machine,
};
use crate::sm::Outcome;
use crate::sm::{Refusal, SessionOutcome};

// ----- sessions -------------------------------------------------------------------

#[test]
fn session_create_returns_its_command_index_and_expiry_at_time_plus_ttl() {
    let mut m = Machine::default();
    let outcomes = m.apply(
        1_000,
        vec![put("k", None), create_session(&["a", "b"], 2, 500)],
    );
    assert_eq!(
        outcomes[1],
        Outcome::Session(SessionOutcome::Created {
            session_id: 2,
            expires_at_ms: 1_500
        })
    );
    let session = m.live_session(2).expect("live");
    assert_eq!(
        (
            session.created_at_ms,
            session.expires_at_ms,
            session.capacity,
            session.load
        ),
        (1_000, 1_500, 2, 0)
    );
    assert_eq!(session.capabilities, caps(&["a", "b"]));
}

#[test]
fn keepalive_extends_to_now_plus_ttl_and_never_shortens() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, 1_000);
    assert_eq!(
        m.apply_one(400, keepalive(id)),
        Outcome::Session(SessionOutcome::Renewed {
            expires_at_ms: 1_400
        })
    );
    // A renewal accepted earlier (at 200) would end sooner; it must not shorten.
    m.apply_one(500, tick(&[(id, 200)]));
    assert_eq!(m.live_session(id).unwrap().expires_at_ms, 1_400);
}

#[test]
fn tick_renews_from_the_accepted_time_and_ignores_unknown_sessions() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, 1_000);
    assert_eq!(
        m.apply_one(900, tick(&[(id, 600), (999, 600)])),
        Outcome::Session(SessionOutcome::Ticked { renewed: 1 })
    );
    assert_eq!(
        m.live_session(id).unwrap().expires_at_ms,
        1_600,
        "from the accepted time, not the tick's 900"
    );
    assert!(m.live_session(999).is_none());
}

#[test]
fn a_session_expires_at_the_start_of_the_first_batch_whose_time_reaches_its_expiry() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, 1_000);
    m.apply(999, vec![]);
    assert!(m.live_session(id).is_some(), "not before its expiry");
    assert_eq!(
        m.apply_one(1_000, keepalive(id)),
        Outcome::Refused(Refusal::SessionNotFound { session_id: id }),
        "expired before the batch's keepalive applied"
    );
    assert!(m.live_session(id).is_none());
}

#[test]
fn a_renewal_accepted_before_expiry_keeps_the_session_even_if_its_tick_applies_after() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, 1_000);
    // The leader accepted a keepalive at 990 and answered "expires at 1_990"; its
    // ticker flushes it in the tick it proposes because the session is due at 1_000.
    assert_eq!(
        m.apply_one(1_000, tick(&[(id, 990)])),
        Outcome::Session(SessionOutcome::Ticked { renewed: 1 })
    );
    assert_eq!(
        m.live_session(id).map(|session| session.expires_at_ms),
        Some(1_990)
    );
}

#[test]
fn ending_an_unknown_session_is_session_not_found() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, 1_000);
    assert_eq!(
        m.apply(1, vec![end_session(id), end_session(id), end_session(42)]),
        vec![
            Outcome::Session(SessionOutcome::Ended),
            Outcome::Refused(Refusal::SessionNotFound { session_id: id }),
            Outcome::Refused(Refusal::SessionNotFound { session_id: 42 }),
        ]
    );
}

// ----- what falls due next -------------------------------------------------------

#[test]
fn next_due_reports_the_earliest_session_expiry_or_task_timer() {
    let mut m = Machine::default();
    assert_eq!(m.state.next_due_ms(), None);
    m.session(0, &[], 1, 10_000);
    assert_eq!(m.state.next_due_ms(), Some(10_000), "session expiry");
    m.submit(
        0,
        NewTask {
            lease_ms: 3_000,
            ..task_spec(&[])
        },
    );
    assert_eq!(m.state.next_due_ms(), Some(3_000), "lease");
    m.submit(
        0,
        NewTask {
            not_before_ms: Some(1_500),
            ..task_spec(&["gpu"])
        },
    );
    assert_eq!(m.state.next_due_ms(), Some(1_500), "not_before");
    m.apply(1_500, vec![]);
    assert_eq!(m.state.next_due_ms(), Some(3_000));
}
