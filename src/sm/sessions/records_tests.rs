//! The session records and indexes are persistent maps and sets since #16: they must
//! encode byte for byte as the `BTreeMap` and `BTreeSet`s of the previous release,
//! decode from those bytes with the derived room index rebuilt, and clone as a
//! pointer copy that later writes leave alone.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::*;
use crate::codec;

/// `Sessions` as the previous release serialized it.
#[derive(Serialize)]
struct PreviousSessions {
    by_id: BTreeMap<SessionId, Session>,
    by_expiry: BTreeSet<(u64, SessionId)>,
    with_room: BTreeSet<(u32, SessionId)>,
}

fn new_session(id: SessionId) -> NewSession {
    let capabilities: &[&str] = if id % 2 == 0 {
        &["gpu", "cpu"]
    } else {
        &["cpu"]
    };
    NewSession {
        name: format!("agent-{id}"),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        // Some sessions have no room at all, some fill up below.
        capacity: (id % 3) as u32,
        ttl_ms: 1_000 * id,
        metadata_json: "{}".into(),
        owner: (id % 4 == 0).then(|| "worker".into()),
    }
}

fn stored_sessions() -> Sessions {
    let mut sessions = Sessions::default();
    for id in 1..=40 {
        sessions.create(id, new_session(id), 10_000);
    }
    for id in (5..=40).step_by(5) {
        sessions.change_load(id, 1);
    }
    sessions
}

#[test]
fn sessions_encode_byte_for_byte_as_the_btree_collections_they_replaced() {
    let sessions = stored_sessions();
    let old = PreviousSessions {
        by_id: sessions.by_id.clone().into_iter().collect(),
        by_expiry: sessions.by_expiry.clone().into_iter().collect(),
        with_room: sessions.with_room.clone().into_iter().collect(),
    };
    assert!(!old.with_room.is_empty() && old.with_room.len() < old.by_id.len());
    let old_bytes = codec::encode(&old).expect("encode");
    assert_eq!(codec::encode(&sessions).expect("encode"), old_bytes);

    let read: Sessions = codec::decode(&old_bytes).expect("decode");
    assert_eq!(read, sessions, "decoding rebuilds the room index too");
    read.assert_indexes_consistent();
    let gpu: BTreeSet<String> = ["gpu".to_string()].into();
    assert_eq!(read.best_with_room(&gpu), sessions.best_with_room(&gpu));
    assert!(read.best_with_room(&gpu).is_some());
}

#[test]
fn a_clone_of_the_sessions_is_a_pointer_copy_that_later_writes_leave_alone() {
    let mut sessions = stored_sessions();
    let copy = sessions.clone();
    assert!(copy.by_id.ptr_eq(&sessions.by_id), "the records are shared");
    assert!(
        copy.by_expiry.ptr_eq(&sessions.by_expiry),
        "an index is shared"
    );
    let before = codec::encode(&copy).expect("encode");

    sessions.remove(2);
    sessions.renew(4, 10_500);
    sessions.change_load(1, 1);
    sessions.create(41, new_session(41), 20_000);
    sessions.assert_indexes_consistent();

    assert_eq!(codec::encode(&copy).expect("encode"), before);
    copy.assert_indexes_consistent();
    assert!(copy.get(2).is_some() && copy.get(41).is_none());
    assert_eq!(copy.get(1).map(|s| s.load), Some(0));
    assert_eq!(copy.get(4).map(|s| s.expires_at_ms), Some(14_000));
}
