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
/// a session records its owner and a submission the subject it acts as (#11); 6 —
/// a session records the semaphores, barriers and elections it joined
/// (`Session::joined`, #11); 7 — proposals and two-phase commit (#12); 8 — the state
/// ends with its format and the idle-record index (`sm::format`, `sm::retention`;
/// `Command::Upgrade`, #14).
///
/// A node reads a directory, a backup and a Raft RPC of [`PREVIOUS_FORMAT_VERSION`]
/// too (a rolling upgrade; see `sm::format` and docs/operations.md "Upgrades").
pub const FORMAT_VERSION: u32 = 8;

/// The one earlier format this binary still reads and speaks.
pub const PREVIOUS_FORMAT_VERSION: u32 = 7;

/// Whether this binary reads data written in `format`.
pub fn reads(format: u32) -> bool {
    format == FORMAT_VERSION || format == PREVIOUS_FORMAT_VERSION
}

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
///
/// A string's (or byte string's) length prefix is trusted by bincode, which
/// allocates that many bytes before reading them: ten mutated bytes claiming a
/// 10^17-byte string aborted the process (found by `sm::decode_fuzz_tests`). Under a
/// decode limit bincode counts what it is about to read against it first: a string
/// its length, an integer its full width (8 bytes for a `u64`, even when its varint
/// took one). So a well-formed buffer claims at most 8× its length, and the limit is
/// [`decode_limit`]: 8× the buffer, rounded up to a power of 4 (at most 32× it). A
/// lying prefix is then `LimitExceeded`, not an allocation; the most a forged buffer
/// can make a decode allocate is that limit.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = match decode_limit(bytes.len()) {
        LIMIT_STEPS_0 => decode_within::<LIMIT_STEPS_0, T>(bytes)?,
        LIMIT_STEPS_1 => decode_within::<LIMIT_STEPS_1, T>(bytes)?,
        LIMIT_STEPS_2 => decode_within::<LIMIT_STEPS_2, T>(bytes)?,
        LIMIT_STEPS_3 => decode_within::<LIMIT_STEPS_3, T>(bytes)?,
        LIMIT_STEPS_4 => decode_within::<LIMIT_STEPS_4, T>(bytes)?,
        LIMIT_STEPS_5 => decode_within::<LIMIT_STEPS_5, T>(bytes)?,
        LIMIT_STEPS_6 => decode_within::<LIMIT_STEPS_6, T>(bytes)?,
        LIMIT_STEPS_7 => decode_within::<LIMIT_STEPS_7, T>(bytes)?,
        LIMIT_STEPS_8 => decode_within::<LIMIT_STEPS_8, T>(bytes)?,
        LIMIT_STEPS_9 => decode_within::<LIMIT_STEPS_9, T>(bytes)?,
        LIMIT_STEPS_10 => decode_within::<LIMIT_STEPS_10, T>(bytes)?,
        LIMIT_STEPS_11 => decode_within::<LIMIT_STEPS_11, T>(bytes)?,
        LIMIT_STEPS_12 => decode_within::<LIMIT_STEPS_12, T>(bytes)?,
        LIMIT_STEPS_13 => decode_within::<LIMIT_STEPS_13, T>(bytes)?,
        LIMIT_STEPS_14 => decode_within::<LIMIT_STEPS_14, T>(bytes)?,
        _ => decode_within::<LIMIT_STEPS_LAST, T>(bytes)?,
    };
    if read != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - read));
    }
    Ok(value)
}

const LIMIT_STEPS_0: usize = 1 << 10;
const LIMIT_STEPS_1: usize = 1 << 12;
const LIMIT_STEPS_2: usize = 1 << 14;
const LIMIT_STEPS_3: usize = 1 << 16;
const LIMIT_STEPS_4: usize = 1 << 18;
const LIMIT_STEPS_5: usize = 1 << 20;
const LIMIT_STEPS_6: usize = 1 << 22;
const LIMIT_STEPS_7: usize = 1 << 24;
const LIMIT_STEPS_8: usize = 1 << 26;
const LIMIT_STEPS_9: usize = 1 << 28;
const LIMIT_STEPS_10: usize = 1 << 30;
const LIMIT_STEPS_11: usize = 1 << 32;
const LIMIT_STEPS_12: usize = 1 << 34;
const LIMIT_STEPS_13: usize = 1 << 36;
const LIMIT_STEPS_14: usize = 1 << 38;
const LIMIT_STEPS_LAST: usize = 1 << 40;

/// The decode limit of a buffer of `len` bytes: the first step (powers of 4 from
/// 1 KiB) at or above 8 × `len` (see [`decode`]).
pub fn decode_limit(len: usize) -> usize {
    let claims = len.saturating_mul(8);
    [
        LIMIT_STEPS_0,
        LIMIT_STEPS_1,
        LIMIT_STEPS_2,
        LIMIT_STEPS_3,
        LIMIT_STEPS_4,
        LIMIT_STEPS_5,
        LIMIT_STEPS_6,
        LIMIT_STEPS_7,
        LIMIT_STEPS_8,
        LIMIT_STEPS_9,
        LIMIT_STEPS_10,
        LIMIT_STEPS_11,
        LIMIT_STEPS_12,
        LIMIT_STEPS_13,
        LIMIT_STEPS_14,
    ]
    .into_iter()
    .find(|&step| step >= claims)
    .unwrap_or(LIMIT_STEPS_LAST)
}

fn decode_within<const LIMIT: usize, T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    // The limit changes nothing in the format, only what a decode may claim.
    bincode::serde::decode_from_slice(bytes, config().with_limit::<LIMIT>())
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

    #[test]
    fn a_length_prefix_larger_than_the_buffer_is_refused_not_allocated() {
        // A varint 0xfd prefix then a u64 length of 2^62: a string "that long".
        let mut bytes = vec![0xfd];
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        bytes.extend_from_slice(b"short");
        assert!(matches!(
            decode::<String>(&bytes),
            Err(CodecError::Decode(
                bincode::error::DecodeError::LimitExceeded
            ))
        ));
        // Well-formed buffers of every shape decode: a long string, many integers.
        let text = "x".repeat(5_000);
        assert_eq!(decode::<String>(&encode(&text).unwrap()).unwrap(), text);
        let numbers: Vec<u64> = (0..10_000).collect();
        assert_eq!(
            decode::<Vec<u64>>(&encode(&numbers).unwrap()).unwrap(),
            numbers
        );
        let flags = vec![Some(false); 3_000];
        assert_eq!(
            decode::<Vec<Option<bool>>>(&encode(&flags).unwrap()).unwrap(),
            flags
        );
    }

    #[test]
    fn the_decode_limit_covers_eight_bytes_per_byte_and_at_most_thirty_two() {
        for len in [0, 1, 127, 128, 129, 5_000, 1 << 20, (1 << 20) + 1, 3 << 30] {
            let limit = decode_limit(len);
            assert!(
                limit >= 8 * len && (len < 128 || limit <= 32 * len),
                "{len}: {limit}"
            );
        }
    }
}
