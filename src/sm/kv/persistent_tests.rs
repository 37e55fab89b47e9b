//! `KvMap` and the request table are persistent maps (`imbl::OrdMap`) since #16;
//! snapshots and log entries written when they were `BTreeMap`s (the previous
//! release's) must read the same, and new ones must be byte-identical.

use std::collections::BTreeMap;

use super::{KvEntry, KvMap};
use crate::codec;

fn entry(n: u64) -> KvEntry {
    KvEntry {
        value_json: format!("{{\"n\":{n}}}"),
        version: n,
        create_index: n / 2,
        session_id: (n % 3 == 0).then_some(n),
    }
}

#[test]
fn a_kv_map_encodes_byte_for_byte_as_the_btree_map_it_replaced() {
    let keys = ["b", "a/1", "a/10", "a/2", "", "z", "é"];
    let old: BTreeMap<String, KvEntry> = keys
        .iter()
        .enumerate()
        .map(|(n, key)| (key.to_string(), entry(n as u64)))
        .collect();
    let new: KvMap = old.clone().into_iter().collect();
    let old_bytes = codec::encode(&old).expect("encode");
    assert_eq!(codec::encode(&new).expect("encode"), old_bytes);
    let read: KvMap = codec::decode(&old_bytes).expect("decode");
    assert_eq!(read, new);
    assert_eq!(
        read.keys().collect::<Vec<_>>(),
        old.keys().collect::<Vec<_>>()
    );
}

#[test]
fn a_clone_shares_the_map_and_a_write_after_it_leaves_the_clone_as_it_was() {
    let mut map: KvMap = (0..10_000u64).map(|n| (n.to_string(), entry(n))).collect();
    let copy = map.clone();
    assert!(
        copy.ptr_eq(&map),
        "a clone is a pointer copy, not a deep copy"
    );
    map.insert("0".into(), entry(99));
    map.remove("1");
    assert_eq!(copy.get("0"), Some(&entry(0)));
    assert_eq!(copy.get("1"), Some(&entry(1)));
    assert_eq!(copy.len(), 10_000);
    assert_eq!(map.len(), 9_999);
}
