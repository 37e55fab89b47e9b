//! The `request_id` table: which idempotency keys were applied, and with what result.
//!
//! Bounded in count ([`Replicated::REQUEST_ID_CAPACITY`]) and in age
//! ([`Replicated::REQUEST_ID_RETENTION_MS`] of cluster time). Both bounds are applied
//! deterministically during apply, so every replica forgets the same ids at the same
//! command.

use std::collections::BTreeMap;

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
pub struct RequestTable {
    by_id: BTreeMap<String, RequestRecord>,
    /// (applied_at_ms, command index) → request id: the forgetting order.
    by_age: BTreeMap<(u64, u64), String>,
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
        while let Some((&(at, _), _)) = self.by_age.first_key_value() {
            if at >= horizon {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, id)) = self.by_age.pop_first() {
            self.by_id.remove(&id);
        }
    }
}
