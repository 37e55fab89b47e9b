//! The key/value room: its state ([`KvMap`]), its command ([`KvCommand`]), its
//! rules (put, delete, compare-and-set on versions, ephemeral keys bound to a
//! session) and its session-end hook.
//!
//! A key's `version` is the command index of its last write and `create_index` the
//! command index that created it; both are identical on every replica. Like all of
//! `sm`, it must not depend on storage, Raft, the clock or the HTTP layer; of the
//! other rooms it touches only `sessions` (an ephemeral key's owner).

mod command;
#[cfg(test)]
mod ephemeral_tests;
#[cfg(test)]
mod persistent_tests;
mod rules;

pub use command::{KvCommand, KvOutcome};

use serde::{Deserialize, Serialize};

use super::command::Outcome;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The value as compact JSON text (bincode cannot carry `serde_json::Value`).
    pub value_json: String,
    pub version: u64,
    pub create_index: u64,
    /// The session this key is bound to (deleted when it ends), if ephemeral.
    pub session_id: Option<u64>,
}

/// A persistent (copy-on-write) map: cloning it for a snapshot build is O(1) (#16).
pub type KvMap = imbl::OrdMap<String, KvEntry>;

fn version_of(kv: &KvMap, key: &str) -> u64 {
    kv.get(key).map_or(0, |entry| entry.version)
}

fn precondition_holds(kv: &KvMap, key: &str, if_version: Option<u64>) -> Result<(), Outcome> {
    match if_version {
        Some(expected) if expected != version_of(kv, key) => {
            Err(Outcome::Kv(KvOutcome::CasMismatch {
                current_version: version_of(kv, key),
            }))
        }
        _ => Ok(()),
    }
}

/// Writes the key; the caller has checked `session_id` names a live session and
/// keeps sessions' ephemeral-key sets in step (see `State::apply_command`).
pub fn put(
    kv: &mut KvMap,
    key: &str,
    value_json: &str,
    if_version: Option<u64>,
    session_id: Option<u64>,
    index: u64,
) -> Outcome {
    if let Err(refusal) = precondition_holds(kv, key, if_version) {
        return refusal;
    }
    let create_index = kv.get(key).map_or(index, |entry| entry.create_index);
    kv.insert(
        key.to_owned(),
        KvEntry {
            value_json: value_json.to_owned(),
            version: index,
            create_index,
            session_id,
        },
    );
    Outcome::Kv(KvOutcome::Written { version: index })
}

pub fn delete(kv: &mut KvMap, key: &str, if_version: Option<u64>) -> Outcome {
    if let Err(refusal) = precondition_holds(kv, key, if_version) {
        return refusal;
    }
    Outcome::Kv(KvOutcome::Deleted {
        existed: kv.remove(key).is_some(),
    })
}

/// Up to `limit` entries whose key starts with `prefix`, in key order, starting after
/// `after` when given.
pub fn list<'a>(
    kv: &'a KvMap,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<(&'a String, &'a KvEntry)> {
    use std::ops::Bound;
    let start = match after {
        Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
        _ => Bound::Included(prefix.to_owned()),
    };
    kv.range((start, Bound::Unbounded))
        .take_while(|(key, _)| key.starts_with(prefix))
        .take(limit)
        .collect()
}
