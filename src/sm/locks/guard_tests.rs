//! Unit tests of lock guards, without Raft: a guarded command applies only while its
//! fencing token is current, and a request id reused with another guard conflicts.

use crate::sm::locks::LockMode::Exclusive;
use crate::sm::sessions::SessionCommand;
use crate::sm::test_support::{acquire_lock, granted_token, one, run, with_sessions_ttl};
use crate::sm::{Batch, Command, Guard, GuardKind, Outcome, Submission};
use crate::sm::{KvOutcome, Refusal};

#[test]
fn a_guard_applies_a_command_only_while_its_token_is_current() {
    let mut state = with_sessions_ttl(2, 10_000);
    let first = granted_token(&one(&mut state, 1, acquire_lock("L", 1, Exclusive, false)));
    let guarded = |token: u64, value: &str| Submission {
        request_id: None,
        acting_as: None,
        guard: Some(Guard {
            kind: GuardKind::Lock,
            name: "L".into(),
            fencing_token: token,
        }),
        command: Command::Kv(crate::sm::kv::KvCommand::Put {
            key: "k".into(),
            value_json: value.into(),
            if_version: None,
            session_id: None,
        }),
    };
    let ok = state.apply_batch(&Batch {
        leader_time_ms: 2,
        submissions: vec![guarded(first, "1")],
    });
    assert!(matches!(
        ok.results[0].outcome,
        Outcome::Kv(KvOutcome::Written { .. })
    ));
    // The holder's session ends; another takes the lock; the old token is now stale.
    run(
        &mut state,
        3,
        vec![
            Command::Session(SessionCommand::End { session_id: 1 }),
            acquire_lock("L", 2, Exclusive, false),
        ],
    );
    let late = state.apply_batch(&Batch {
        leader_time_ms: 4,
        submissions: vec![guarded(first, "late")],
    });
    assert!(matches!(
        late.results[0].outcome,
        Outcome::Refused(Refusal::StaleFencingToken { .. })
    ));
    assert_eq!(
        state.kv["k"].value_json, "1",
        "the stale write changed nothing"
    );
}

#[test]
fn a_request_id_reused_with_a_different_guard_is_a_conflict() {
    let mut state = with_sessions_ttl(1, 10_000);
    let held = granted_token(&one(&mut state, 1, acquire_lock("L", 1, Exclusive, false)));
    let put = |guard: Option<Guard>| Submission {
        request_id: Some("r".into()),
        guard,
        acting_as: None,
        command: Command::Kv(crate::sm::kv::KvCommand::Put {
            key: "k".into(),
            value_json: "1".into(),
            if_version: None,
            session_id: None,
        }),
    };
    state.apply_batch(&Batch {
        leader_time_ms: 2,
        submissions: vec![put(None)],
    });
    let guarded = Some(Guard {
        kind: GuardKind::Lock,
        name: "L".into(),
        fencing_token: held,
    });
    let again = state.apply_batch(&Batch {
        leader_time_ms: 3,
        submissions: vec![put(guarded)],
    });
    assert_eq!(
        again.results[0].outcome,
        Outcome::Refused(Refusal::RequestIdConflict)
    );
}
