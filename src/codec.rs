//! The one place that turns values into bytes and back, for disk and for the wire.
//!
//! Everything Conclave persists in sled (log entries, the vote, snapshots) and every
//! Raft RPC body between nodes goes through [`encode`] and [`decode`]. Changing the
//! encoding means changing this module and bumping [`FORMAT_VERSION`]; a node refuses
//! to open a data directory written with another format version (see `store`), and a
//! node refuses a Raft RPC whose format header differs (see `transport::server`).
//!
//! The encoding is bincode 2 (`config::standard()`, varint integers) through serde.
//! Types that pass through here must not use `#[serde(flatten)]`, `untagged` or
//! `skip_serializing_if`, which bincode cannot round-trip; the HTTP layer has its own
//! JSON types for that reason.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version of every on-disk and on-wire format in this module. Stored once per
/// data directory and sent with every Raft RPC. Bump it with every change to an
/// encoded type. History: 1 — the first format; 2 — commands nest per primitive
/// (`Command::Kv`, `Command::Session`, `Command::Task`, `Command::Lock`,
/// `Command::Semaphore`, `Command::Barrier`, `Command::Election`; issue #10); 3 —
/// outcomes nest per primitive too (`Outcome::Lock(LockOutcome)` …, shared refusals
/// in `Outcome::Refused(Refusal)`; outcomes are kept in the idempotency records);
/// 4 — a member records its peer listener's address (`Member::raft_addr`; #11); 5 —
/// a session records its owner and a submission the subject it acts as (#11).
pub const FORMAT_VERSION: u32 = 5;

/// Encoding or decoding failed. Decoding failures of persisted data are fatal to the
/// node (a log entry that cannot be decoded must stop it rather than let replicas
/// diverge); on the wire they are a 400 to the sender.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("decode: {0} trailing bytes")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` with the project's encoding.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes a whole buffer; trailing bytes are an error (they mean a format mismatch).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())?;
    if read != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_trailing_bytes() {
        let value = (7u64, String::from("key"), Some(vec![1u8, 2, 3]));
        let mut bytes = encode(&value).unwrap();
        let back: (u64, String, Option<Vec<u8>>) = decode(&bytes).unwrap();
        assert_eq!(back, value);
        bytes.push(0);
        assert!(matches!(
            decode::<(u64, String, Option<Vec<u8>>)>(&bytes),
            Err(CodecError::Trailing(1))
        ));
    }
}
