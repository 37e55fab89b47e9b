//! How [`State`] is laid out in bytes, per format version, and the upgrade between
//! them. Format 7 is the previous layout: the fourteen fields up to `two_phase`.
//! Format 8 appends `format` and the idle-record index (`sm::retention`).
//!
//! A state the cluster has not upgraded yet (`format` below 8) is written in the
//! format-7 layout, byte for byte what a node of the previous release writes, so
//! during a rolling upgrade old and new nodes exchange snapshots and compare state
//! hashes freely. The leader proposes `Command::Upgrade` once every member speaks
//! format 8 (`replica::ticker`); from that entry on every replica writes format 8.
//!
//! Decoding takes either layout: after the fourteen fields, the format-8 tail is
//! read if present; a buffer that ends there is format 7. (So `State` must be the
//! last field of whatever contains it, or encoded on its own; tests check both
//! layouts and a corrupt tail.) Must not depend on storage, Raft or the HTTP layer.

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::State;

/// The format whose layout and rules a state starts in (before the cluster's
/// upgrade): the previous release's.
pub const LEGACY: u32 = crate::codec::PREVIOUS_FORMAT_VERSION;

/// Fields of the format-7 layout.
const V7_FIELDS: usize = 14;

impl State {
    /// The format this state's rules and layout follow.
    pub fn active_format(&self) -> u32 {
        self.format.max(LEGACY)
    }

    /// Whether idle records are tracked and removed (format 8 on).
    pub(in crate::sm) fn retains_idle_records(&self) -> bool {
        self.active_format() >= 8
    }

    /// Applies `Command::Upgrade`: moves the state to `format` (never down, never
    /// past what this binary knows: the leader proposes only what every member
    /// speaks).
    pub(in crate::sm) fn upgrade(&mut self, format: u32) {
        let format = format.min(crate::codec::FORMAT_VERSION);
        if format <= self.active_format() {
            return;
        }
        self.format = format;
        self.start_retention();
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let upgraded = self.active_format() >= 8;
        let tail = if upgraded { 2 } else { 0 };
        let mut tuple = serializer.serialize_tuple(V7_FIELDS + tail)?;
        tuple.serialize_element(&self.cluster_time_ms)?;
        tuple.serialize_element(&self.last_command_index)?;
        tuple.serialize_element(&self.kv)?;
        tuple.serialize_element(&self.requests)?;
        tuple.serialize_element(&self.sessions)?;
        tuple.serialize_element(&self.tasks)?;
        tuple.serialize_element(&self.locks)?;
        tuple.serialize_element(&self.last_fencing_token)?;
        tuple.serialize_element(&self.lock_delays)?;
        tuple.serialize_element(&self.semaphores)?;
        tuple.serialize_element(&self.barriers)?;
        tuple.serialize_element(&self.elections)?;
        tuple.serialize_element(&self.proposals)?;
        tuple.serialize_element(&self.two_phase)?;
        if upgraded {
            tuple.serialize_element(&self.format)?;
            tuple.serialize_element(&self.idle)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_tuple(V7_FIELDS + 2, StateVisitor)
    }
}

struct StateVisitor;

fn field<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
    seq: &mut A,
    position: usize,
) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| de::Error::invalid_length(position, &"a conclave state"))
}

impl<'de> Visitor<'de> for StateVisitor {
    type Value = State;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a conclave state (format 7 or 8)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<State, A::Error> {
        let mut state = State {
            cluster_time_ms: field(&mut seq, 0)?,
            last_command_index: field(&mut seq, 1)?,
            kv: field(&mut seq, 2)?,
            requests: field(&mut seq, 3)?,
            sessions: field(&mut seq, 4)?,
            tasks: field(&mut seq, 5)?,
            locks: field(&mut seq, 6)?,
            last_fencing_token: field(&mut seq, 7)?,
            lock_delays: field(&mut seq, 8)?,
            semaphores: field(&mut seq, 9)?,
            barriers: field(&mut seq, 10)?,
            elections: field(&mut seq, 11)?,
            proposals: field(&mut seq, 12)?,
            two_phase: field(&mut seq, 13)?,
            ..State::default()
        };
        // The format-8 tail, if the bytes go on: a buffer that ends here is format
        // 7 (reading the format number fails at its end). Once a format number was
        // read the rest must decode.
        if let Ok(Some(format)) = seq.next_element::<u32>() {
            state.format = format;
            state.idle = field(&mut seq, V7_FIELDS + 1)?;
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn sample() -> State {
        let mut state = State {
            cluster_time_ms: 5,
            last_command_index: 9,
            ..State::default()
        };
        crate::sm::kv::put(&mut state.kv, "k", "\"v\"", None, None, 9);
        state
    }

    #[test]
    fn a_legacy_state_writes_the_format_7_layout_and_reads_back() {
        let state = sample();
        let bytes = codec::encode(&state).unwrap();
        // The format-7 layout is the fourteen fields and nothing else.
        let s = &state;
        let fields = (
            (s.cluster_time_ms, s.last_command_index, &s.kv, &s.requests),
            (&s.sessions, &s.tasks, &s.locks, s.last_fencing_token),
            (&s.lock_delays, &s.semaphores, &s.barriers, &s.elections),
            (&s.proposals, &s.two_phase),
        );
        assert_eq!(bytes, codec::encode(&fields).unwrap());
        let back: State = codec::decode(&bytes).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.active_format(), 7);
    }

    #[test]
    fn an_upgraded_state_writes_its_tail_and_reads_back() {
        let mut state = sample();
        state.upgrade(8);
        assert_eq!(state.active_format(), 8);
        let bytes = codec::encode(&state).unwrap();
        let legacy = codec::encode(&sample()).unwrap();
        assert!(bytes.len() > legacy.len() && bytes.starts_with(&legacy));
        let back: State = codec::decode(&bytes).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.active_format(), 8);
    }

    #[test]
    fn a_corrupt_tail_is_refused_not_read_as_format_7() {
        let mut state = sample();
        state.upgrade(8);
        let mut bytes = codec::encode(&state).unwrap();
        let legacy_len = codec::encode(&sample()).unwrap().len();
        // A length prefix claiming far more idle records than follow.
        bytes.truncate(legacy_len + 1);
        bytes.push(3);
        bytes.push(0xff);
        assert!(codec::decode::<State>(&bytes).is_err());
    }

    #[test]
    fn upgrade_never_goes_down_or_past_this_binary() {
        let mut state = sample();
        state.upgrade(codec::FORMAT_VERSION + 5);
        assert_eq!(state.active_format(), codec::FORMAT_VERSION);
        state.upgrade(7);
        assert_eq!(state.active_format(), codec::FORMAT_VERSION);
    }
}
