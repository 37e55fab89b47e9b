//! The barriers room: its state (a [`Barrier`] per name: the generation gathering,
//! who has arrived, how recent generations ended), its command
//! ([`BarrierCommand`]), its rules (`rules`: wait, leave) and its session-end hook.
//!
//! A barrier releases a generation when `parties` distinct sessions have arrived; a
//! participant's session ending breaks the generation for everyone.
//!
//! Like all of `sm`, it must not depend on storage, Raft, the clock or the HTTP
//! layer; of the other rooms it touches only `sessions` (an arrival's session).

mod command;
mod rules;

#[cfg(test)]
mod tests;

pub use command::{BarrierCommand, BarrierOutcome};

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::sm::sessions::SessionId;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Barrier {
    pub parties: u32,
    /// The generation now gathering.
    pub generation: u64,
    pub arrived: BTreeSet<SessionId>,
    /// How recent generations ended: generation → broken. Bounded.
    pub ended: BTreeMap<u64, bool>,
}

impl Barrier {
    /// Ends the gathering generation (released, or broken) and starts the next.
    pub fn end_generation(&mut self, broken: bool) {
        self.ended.insert(self.generation, broken);
        while self.ended.len() > crate::limits::Replicated::BARRIER_HISTORY {
            self.ended.pop_first();
        }
        self.generation += 1;
        self.arrived.clear();
    }
}

pub type Barriers = BTreeMap<String, Barrier>;
