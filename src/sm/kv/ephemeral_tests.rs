//! Ephemeral keys: a put bound to a session, unbound by a plain overwrite, moved by
//! a rebind, and deleted when its session ends or expires.

use crate::sm::test_support::{caps, delete, end_session, put, Machine, FOREVER_MS};
use crate::sm::Outcome;
use crate::sm::Refusal;

// ----- ephemeral keys -------------------------------------------------------------

#[test]
fn a_put_with_a_session_binds_the_key_and_ending_the_session_deletes_it() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, FOREVER_MS);
    m.apply(1, vec![put("lock", Some(id)), put("plain", None)]);
    assert_eq!(m.state.kv["lock"].session_id, Some(id));
    assert_eq!(m.live_session(id).unwrap().ephemeral_keys, caps(&["lock"]));
    m.apply_one(2, end_session(id));
    assert!(!m.state.kv.contains_key("lock"));
    assert!(m.state.kv.contains_key("plain"));
}

#[test]
fn an_expiring_session_deletes_its_ephemeral_keys() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, 1_000);
    m.apply_one(1, put("lock", Some(id)));
    m.apply(999, vec![]);
    assert!(m.state.kv.contains_key("lock"));
    m.apply(1_000, vec![]);
    assert!(!m.state.kv.contains_key("lock"));
}

#[test]
fn overwriting_an_ephemeral_key_without_a_session_unbinds_it_so_it_survives_the_session() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, FOREVER_MS);
    m.apply(1, vec![put("lock", Some(id)), put("lock", None)]);
    assert_eq!(m.state.kv["lock"].session_id, None);
    assert!(m.live_session(id).unwrap().ephemeral_keys.is_empty());
    m.apply_one(2, end_session(id));
    assert!(m.state.kv.contains_key("lock"));
}

#[test]
fn rebinding_an_ephemeral_key_to_another_session_moves_it() {
    let mut m = Machine::default();
    let first = m.session(0, &[], 1, FOREVER_MS);
    let second = m.session(0, &[], 1, FOREVER_MS);
    m.apply(1, vec![put("lock", Some(first)), put("lock", Some(second))]);
    assert!(m.live_session(first).unwrap().ephemeral_keys.is_empty());
    assert_eq!(
        m.live_session(second).unwrap().ephemeral_keys,
        caps(&["lock"])
    );
    m.apply_one(2, end_session(first));
    assert_eq!(m.state.kv["lock"].session_id, Some(second));
    m.apply_one(3, end_session(second));
    assert!(m.state.kv.is_empty());
}

#[test]
fn a_put_for_an_unknown_session_is_refused_and_writes_nothing() {
    let mut m = Machine::default();
    assert_eq!(
        m.apply_one(0, put("lock", Some(7))),
        Outcome::Refused(Refusal::SessionNotFound { session_id: 7 })
    );
    assert!(m.state.kv.is_empty());
}

#[test]
fn deleting_an_ephemeral_key_removes_it_from_the_sessions_set() {
    let mut m = Machine::default();
    let id = m.session(0, &[], 1, FOREVER_MS);
    m.apply(1, vec![put("lock", Some(id)), delete("lock")]);
    assert!(m.live_session(id).unwrap().ephemeral_keys.is_empty());
    // A later plain write of the same key is not the session's to delete.
    m.apply(2, vec![put("lock", None), end_session(id)]);
    assert!(m.state.kv.contains_key("lock"));
}
