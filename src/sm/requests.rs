//! The `request_id` table: which idempotency keys were applied, and with what result.
//!
//! Bounded in count ([`Replicated::REQUEST_ID_CAPACITY`]) and in age
//! ([`Replicated::REQUEST_ID_RETENTION_MS`] of cluster time). Both bounds are applied
//! deterministically during apply, so every replica forgets the same ids at the same
//! command.

use serde::{Deserialize, Serialize};

use super::command::Applied;
use crate::limits::Replicated;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub applied: Applied,
    pub applied_at_ms: u64,
    /// [`fingerprint`] of the command, to tell a retry from a reuse of the id.
    pub fingerprint: u64,
}

/// A stable 64-bit FNV-1a hash of a command's encoding. Stable across processes and
/// builds of the same format version (unlike `std`'s hashers), so every replica
/// computes the same value.
pub fn fingerprint(command: &super::Command, guard: &Option<super::Guard>) -> u64 {
    fnv1a(&crate::codec::encode(&(command, guard)).unwrap_or_default())
}

/// 64-bit FNV-1a: small, stable, and the same on every platform and build.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
/// Persistent (copy-on-write) maps, as [`super::kv::KvMap`]: a snapshot build copies
/// the table in O(1) instead of 100,000 records under the state lock (#16).
pub struct RequestTable {
    by_id: imbl::OrdMap<String, RequestRecord>,
    /// (applied_at_ms, command index) → request id: the forgetting order.
    by_age: imbl::OrdMap<(u64, u64), String>,
}

impl RequestTable {
    pub fn get(&self, request_id: &str) -> Option<&RequestRecord> {
        self.by_id.get(request_id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Remembers a newly applied request, forgetting the oldest if over capacity.
    pub fn insert(&mut self, request_id: String, applied: Applied, fingerprint: u64, now_ms: u64) {
        self.by_age
            .insert((now_ms, applied.index), request_id.clone());
        self.by_id.insert(
            request_id,
            RequestRecord {
                applied,
                applied_at_ms: now_ms,
                fingerprint,
            },
        );
        while self.by_id.len() > Replicated::REQUEST_ID_CAPACITY {
            self.forget_oldest();
        }
    }

    /// Forgets every request applied more than the retention period before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(Replicated::REQUEST_ID_RETENTION_MS);
        while let Some(&((at, _), _)) = self.by_age.get_min() {
            if at >= horizon {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some(&(oldest, _)) = self.by_age.get_min() else {
            return;
        };
        if let Some(id) = self.by_age.remove(&oldest) {
            self.by_id.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sm::command::Outcome;

    /// The table as the previous release stored it.
    #[derive(Serialize)]
    struct BTreeTable {
        by_id: BTreeMap<String, RequestRecord>,
        by_age: BTreeMap<(u64, u64), String>,
    }

    #[test]
    fn the_table_encodes_as_the_btree_maps_it_replaced_and_forgets_oldest_first() {
        let mut table = RequestTable::default();
        for n in 0..5u64 {
            let applied = Applied {
                index: 10 + n,
                outcome: Outcome::Upgraded { format: 8 },
            };
            table.insert(format!("id-{}", 4 - n), applied, n, 1_000 + n);
        }
        let old = BTreeTable {
            by_id: table.by_id.clone().into_iter().collect(),
            by_age: table.by_age.clone().into_iter().collect(),
        };
        let bytes = crate::codec::encode(&old).expect("encode");
        assert_eq!(crate::codec::encode(&table).expect("encode"), bytes);
        let read: RequestTable = crate::codec::decode(&bytes).expect("decode");
        assert_eq!(read, table);
        // Applied at 1,000 + n: a retention horizon past 1,002 forgets ids 4, 3, 2.
        table.expire(1_003 + Replicated::REQUEST_ID_RETENTION_MS);
        assert_eq!(table.len(), 2);
        assert!(table.get("id-4").is_none() && table.get("id-2").is_none());
        assert!(table.get("id-1").is_some() && table.get("id-0").is_some());
    }
}
