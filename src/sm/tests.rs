//! Unit tests of the pure state machine: no Raft, no IO.

use super::*;
use crate::codec;
use crate::limits::Replicated;
use crate::sm::{KvOutcome, Refusal};

fn put(key: &str, value: &str, if_version: Option<u64>) -> Submission {
    Submission {
        guard: None,
        acting_as: None,
        request_id: None,
        command: Command::Kv(crate::sm::kv::KvCommand::Put {
            key: key.into(),
            value_json: value.into(),
            if_version,
            session_id: None,
        }),
    }
}

fn delete(key: &str, if_version: Option<u64>) -> Submission {
    Submission {
        guard: None,
        acting_as: None,
        request_id: None,
        command: Command::Kv(crate::sm::kv::KvCommand::Delete {
            key: key.into(),
            if_version,
        }),
    }
}

fn with_id(mut submission: Submission, id: &str) -> Submission {
    submission.request_id = Some(id.into());
    submission
}

fn batch(time: u64, submissions: Vec<Submission>) -> Batch {
    Batch {
        leader_time_ms: time,
        submissions,
    }
}

fn outcomes(response: &BatchResponse) -> Vec<Outcome> {
    response
        .results
        .iter()
        .map(|applied| applied.outcome.clone())
        .collect()
}

#[test]
fn put_assigns_command_indexes_as_versions() {
    let mut state = State::default();
    let response = state.apply_batch(&batch(10, vec![put("a", "1", None), put("b", "2", None)]));
    assert_eq!(
        response.results,
        vec![
            Applied {
                index: 1,
                outcome: Outcome::Kv(KvOutcome::Written { version: 1 })
            },
            Applied {
                index: 2,
                outcome: Outcome::Kv(KvOutcome::Written { version: 2 })
            },
        ]
    );
    state.apply_batch(&batch(11, vec![put("a", "3", None)]));
    let entry = &state.kv["a"];
    assert_eq!(
        (entry.value_json.as_str(), entry.version, entry.create_index),
        ("3", 3, 1)
    );
    assert_eq!(state.last_command_index, 3);
}

#[test]
fn compare_and_set_checks_the_version() {
    let mut state = State::default();
    state.apply_batch(&batch(1, vec![put("k", "1", Some(0))]));
    let response = state.apply_batch(&batch(
        2,
        vec![
            put("k", "2", Some(0)),
            put("k", "3", Some(7)),
            put("k", "4", Some(1)),
        ],
    ));
    assert_eq!(
        outcomes(&response),
        vec![
            Outcome::Kv(KvOutcome::CasMismatch { current_version: 1 }),
            Outcome::Kv(KvOutcome::CasMismatch { current_version: 1 }),
            Outcome::Kv(KvOutcome::Written { version: 4 }),
        ]
    );
    assert_eq!(state.kv["k"].value_json, "4");
}

#[test]
fn create_only_put_on_absent_key_succeeds_and_cas_on_absent_reports_zero() {
    let mut state = State::default();
    let response = state.apply_batch(&batch(
        1,
        vec![put("x", "1", Some(5)), put("x", "1", Some(0))],
    ));
    assert_eq!(
        outcomes(&response),
        vec![
            Outcome::Kv(KvOutcome::CasMismatch { current_version: 0 }),
            Outcome::Kv(KvOutcome::Written { version: 2 })
        ]
    );
}

#[test]
fn delete_removes_and_honours_if_version() {
    let mut state = State::default();
    state.apply_batch(&batch(1, vec![put("k", "1", None)]));
    let response = state.apply_batch(&batch(
        2,
        vec![
            delete("k", Some(9)),
            delete("k", Some(1)),
            delete("k", None),
        ],
    ));
    assert_eq!(
        outcomes(&response),
        vec![
            Outcome::Kv(KvOutcome::CasMismatch { current_version: 1 }),
            Outcome::Kv(KvOutcome::Deleted { existed: true }),
            Outcome::Kv(KvOutcome::Deleted { existed: false }),
        ]
    );
    assert!(state.kv.is_empty());
}

#[test]
fn a_retried_request_id_returns_the_first_result_and_applies_nothing() {
    let mut state = State::default();
    let first = state.apply_batch(&batch(1, vec![with_id(put("k", "1", None), "r1")]));
    state.apply_batch(&batch(2, vec![put("k", "2", None)]));
    let retry = state.apply_batch(&batch(3, vec![with_id(put("k", "1", None), "r1")]));
    assert_eq!(retry.results, first.results);
    assert_eq!(
        state.kv["k"].value_json, "2",
        "the retry must not apply again"
    );
    assert_eq!(
        state.last_command_index, 2,
        "a deduplicated retry takes no index"
    );
    // Duplicates within one batch are caught too.
    let same_batch = state.apply_batch(&batch(
        4,
        vec![
            with_id(put("z", "1", None), "r2"),
            with_id(put("z", "1", None), "r2"),
        ],
    ));
    assert_eq!(same_batch.results[0], same_batch.results[1]);
}

#[test]
fn a_request_id_reused_for_another_command_is_refused_and_applies_nothing() {
    let mut state = State::default();
    let first = state.apply_batch(&batch(1, vec![with_id(put("k", "1", None), "r1")]));
    let reused = state.apply_batch(&batch(2, vec![with_id(put("other", "1", None), "r1")]));
    assert_eq!(
        reused.results,
        vec![Applied {
            index: first.results[0].index,
            outcome: Outcome::Refused(Refusal::RequestIdConflict)
        }]
    );
    assert!(!state.kv.contains_key("other"));
    assert_eq!(state.last_command_index, 1);
    // The genuine retry still gets its first result.
    let retry = state.apply_batch(&batch(3, vec![with_id(put("k", "1", None), "r1")]));
    assert_eq!(retry.results, first.results);
}

#[test]
fn request_ids_expire_by_cluster_time() {
    let mut state = State::default();
    state.apply_batch(&batch(1_000, vec![with_id(put("k", "1", None), "r1")]));
    assert!(state.requests.get("r1").is_some());
    state.apply_batch(&batch(1_000 + Replicated::REQUEST_ID_RETENTION_MS, vec![]));
    assert!(
        state.requests.get("r1").is_some(),
        "kept for exactly the retention period"
    );
    state.apply_batch(&batch(1_001 + Replicated::REQUEST_ID_RETENTION_MS, vec![]));
    assert!(state.requests.get("r1").is_none());
    // Forgotten, so a retry now applies again.
    let again = state.apply_batch(&batch(
        2_000 + Replicated::REQUEST_ID_RETENTION_MS,
        vec![with_id(put("k", "1", None), "r1")],
    ));
    assert_eq!(again.results[0].index, 2);
}

#[test]
fn request_table_is_bounded_and_forgets_the_oldest() {
    let mut state = State::default();
    let submissions: Vec<Submission> = (0..Replicated::REQUEST_ID_CAPACITY + 3)
        .map(|i| with_id(put("k", "1", None), &format!("r{i}")))
        .collect();
    state.apply_batch(&batch(1, submissions));
    assert_eq!(state.requests.len(), Replicated::REQUEST_ID_CAPACITY);
    assert!(state.requests.get("r0").is_none());
    assert!(state.requests.get("r2").is_none());
    assert!(state.requests.get("r3").is_some());
}

#[test]
fn cluster_time_never_goes_backwards() {
    let mut state = State::default();
    state.apply_batch(&batch(500, vec![]));
    state.apply_batch(&batch(400, vec![]));
    assert_eq!(state.cluster_time_ms, 500);
    state.apply_batch(&batch(600, vec![]));
    assert_eq!(state.cluster_time_ms, 600);
}

#[test]
fn list_returns_a_prefix_in_key_order_with_paging() {
    let mut state = State::default();
    state.apply_batch(&batch(
        1,
        ["a/2", "a/1", "b/1", "a/3", "a"]
            .iter()
            .map(|key| put(key, "0", None))
            .collect(),
    ));
    let keys = |after: Option<&str>, limit| {
        kv::list(&state.kv, "a/", after, limit)
            .into_iter()
            .map(|(key, _)| key.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(None, 10), vec!["a/1", "a/2", "a/3"]);
    assert_eq!(keys(None, 2), vec!["a/1", "a/2"]);
    assert_eq!(keys(Some("a/2"), 10), vec!["a/3"]);
    assert_eq!(
        keys(Some("0"), 10),
        vec!["a/1", "a/2", "a/3"],
        "a cursor before the prefix starts at it"
    );
}

/// Same commands, same state bytes: the property replication relies on.
#[test]
fn applying_the_same_batches_gives_identical_state_bytes() {
    let batches: Vec<Batch> = (0..50u64)
        .map(|i| {
            batch(
                1_000 + i * 7 % 13,
                vec![
                    with_id(
                        put(&format!("k{}", i % 7), &format!("{i}"), None),
                        &format!("r{}", i % 11),
                    ),
                    put(&format!("k{}", i % 5), "\"x\"", Some(i % 3)),
                    delete(
                        &format!("k{}", i % 4),
                        if i % 2 == 0 { None } else { Some(i) },
                    ),
                ],
            )
        })
        .collect();
    let run = || {
        let mut state = State::default();
        let responses: Vec<BatchResponse> = batches.iter().map(|b| state.apply_batch(b)).collect();
        (codec::encode(&state).unwrap(), responses)
    };
    let (first_bytes, first_responses) = run();
    let (second_bytes, second_responses) = run();
    assert_eq!(first_bytes, second_bytes);
    assert_eq!(first_responses, second_responses);
    let decoded: State = codec::decode(&first_bytes).unwrap();
    assert_eq!(
        codec::encode(&decoded).unwrap(),
        first_bytes,
        "state survives a snapshot round trip"
    );
}

/// A command acting for a session is refused when it acts as another subject than
/// the session's owner; `admin` (no `acting_as`) and the owner pass, and the
/// refusal does not take the request id.
#[test]
fn a_session_is_usable_only_by_its_owner_or_an_unheld_caller() {
    use crate::sm::sessions::{NewSession, SessionCommand};
    let mut state = State::default();
    let create = Command::Session(SessionCommand::Create(NewSession {
        name: "w".into(),
        capabilities: Default::default(),
        capacity: 1,
        ttl_ms: 60_000,
        metadata_json: "{}".into(),
        owner: Some("alice".into()),
    }));
    let Outcome::Session(SessionOutcome::Created { session_id, .. }) =
        test_support::one(&mut state, 1, create)
    else {
        panic!("not created");
    };
    let acquire = |acting_as: Option<&str>, request_id: Option<&str>| Submission {
        request_id: request_id.map(Into::into),
        guard: None,
        acting_as: acting_as.map(Into::into),
        command: Command::Lock(crate::sm::locks::LockCommand::Acquire {
            name: "L".into(),
            session_id,
            mode: crate::sm::locks::LockMode::Exclusive,
            wait: false,
            lock_delay_ms: 0,
            previous_token: None,
        }),
    };
    let refused = state.apply_batch(&batch(2, vec![acquire(Some("mallory"), Some("r1"))]));
    assert_eq!(
        outcomes(&refused),
        vec![Outcome::Refused(Refusal::NotSessionOwner { session_id })]
    );
    assert!(state.locks.get("L").is_none());
    let granted = state.apply_batch(&batch(3, vec![acquire(Some("alice"), Some("r1"))]));
    assert!(matches!(
        outcomes(&granted)[0],
        Outcome::Lock(LockOutcome::Granted { .. })
    ));
    let end = |acting_as: Option<&str>| Submission {
        request_id: None,
        guard: None,
        acting_as: acting_as.map(Into::into),
        command: Command::Session(SessionCommand::End { session_id }),
    };
    let refused = state.apply_batch(&batch(4, vec![end(Some("mallory"))]));
    assert!(matches!(
        outcomes(&refused)[0],
        Outcome::Refused(Refusal::NotSessionOwner { .. })
    ));
    let ended = state.apply_batch(&batch(5, vec![end(None)]));
    assert_eq!(
        outcomes(&ended),
        vec![Outcome::Session(SessionOutcome::Ended)]
    );
}
