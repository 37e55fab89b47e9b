//! Which chunks of an incoming snapshot may be handed to Raft next.

use super::server::Refusal;

/// One `/raft/snapshot` chunk, as far as admission is concerned.
pub struct Chunk<'a> {
    pub snapshot_id: &'a str,
    pub offset: u64,
    pub len: u64,
}

/// The snapshot being received and how many of its bytes Raft has taken.
///
/// openraft writes each chunk at its offset into an in-memory buffer, so a chunk at
/// offset 2^40 made the node allocate 1 TiB and abort, and one at 2^63 − 1 made
/// the handler panic (bug: "two /raft/snapshot chunks kill a node"). Admitted: offset
/// 0 (a new snapshot, or the first chunk again), the next contiguous offset of the
/// snapshot being received, and a resend of bytes already received (openraft
/// resends after a timeout); never past `max_snapshot_bytes` in all.
#[derive(Debug, Default)]
pub struct SnapshotReceipt {
    /// (snapshot id, bytes received) of the snapshot being streamed, if any.
    receiving: Option<(String, u64)>,
}

impl SnapshotReceipt {
    /// Admits `chunk` or says why not; `Ok` is the received length once it is taken.
    pub fn admit(&self, chunk: &Chunk<'_>, max_bytes: u64) -> Result<u64, Refusal> {
        let refuse = |message: String| Err(Refusal::InvalidSnapshotChunk(message));
        let Some(end) = chunk.offset.checked_add(chunk.len) else {
            return refuse(format!("chunk offset {} overflows", chunk.offset));
        };
        if end > max_bytes {
            return refuse(format!(
                "snapshot chunk ends at byte {end}, past the limit of {max_bytes} bytes"
            ));
        }
        if chunk.offset == 0 {
            return Ok(end);
        }
        match &self.receiving {
            Some((id, received)) if id == chunk.snapshot_id && chunk.offset <= *received => {
                Ok(end.max(*received))
            }
            Some((id, received)) if id == chunk.snapshot_id => refuse(format!(
                "snapshot {id:?}: chunk at offset {} would leave a gap after byte {received}",
                chunk.offset
            )),
            _ => refuse(format!(
                "snapshot {:?} was not started (its first chunk is at offset 0), got offset {}",
                chunk.snapshot_id, chunk.offset
            )),
        }
    }

    /// Records that Raft took a chunk admitted with `end`; the last one ends it.
    pub fn received(&mut self, snapshot_id: String, end: u64, done: bool) {
        self.receiving = (!done).then_some((snapshot_id, end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1 << 30;

    fn chunk(snapshot_id: &str, offset: u64, len: u64) -> Chunk<'_> {
        Chunk {
            snapshot_id,
            offset,
            len,
        }
    }

    #[test]
    fn two_raft_snapshot_chunks_kill_a_node() {
        let mut receipt = SnapshotReceipt::default();
        let end = receipt.admit(&chunk("s1", 0, 100), MAX).unwrap();
        receipt.received("s1".into(), end, false);
        // The two chunks of the bug: far past the data received, and at 2^63 − 1.
        assert!(receipt.admit(&chunk("s1", 1 << 40, 100), MAX).is_err());
        assert!(receipt
            .admit(&chunk("s1", (1 << 63) - 1, 100), MAX)
            .is_err());
        assert!(receipt.admit(&chunk("s1", u64::MAX, 1), MAX).is_err());
        // A gap of one byte is refused too.
        assert!(receipt.admit(&chunk("s1", 101, 10), MAX).is_err());
    }

    #[test]
    fn contiguous_chunks_resends_and_new_snapshots_are_admitted() {
        let mut receipt = SnapshotReceipt::default();
        // Nothing started: only offset 0.
        assert!(receipt.admit(&chunk("s1", 10, 10), MAX).is_err());
        let end = receipt.admit(&chunk("s1", 0, 10), MAX).unwrap();
        receipt.received("s1".into(), end, false);
        // The next contiguous chunk.
        let end = receipt.admit(&chunk("s1", 10, 10), MAX).unwrap();
        assert_eq!(end, 20);
        receipt.received("s1".into(), end, false);
        // A resend of a chunk already received keeps what was received.
        assert_eq!(receipt.admit(&chunk("s1", 10, 10), MAX).unwrap(), 20);
        assert_eq!(receipt.admit(&chunk("s1", 0, 10), MAX).unwrap(), 10);
        // Another snapshot id continues only from its own offset 0.
        assert!(receipt.admit(&chunk("s2", 20, 10), MAX).is_err());
        let end = receipt.admit(&chunk("s2", 0, 5), MAX).unwrap();
        receipt.received("s2".into(), end, false);
        assert!(receipt.admit(&chunk("s1", 20, 10), MAX).is_err());
        // The last chunk ends the snapshot; a later non-zero offset is refused.
        let end = receipt.admit(&chunk("s2", 5, 5), MAX).unwrap();
        receipt.received("s2".into(), end, true);
        assert!(receipt.admit(&chunk("s2", 10, 5), MAX).is_err());
    }

    #[test]
    fn a_snapshot_larger_than_the_limit_is_refused() {
        let mut receipt = SnapshotReceipt::default();
        assert!(receipt.admit(&chunk("s1", 0, 101), 100).is_err());
        let end = receipt.admit(&chunk("s1", 0, 60), 100).unwrap();
        receipt.received("s1".into(), end, false);
        assert!(receipt.admit(&chunk("s1", 60, 41), 100).is_err());
        assert_eq!(receipt.admit(&chunk("s1", 60, 40), 100).unwrap(), 100);
    }
}
