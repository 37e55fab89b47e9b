//! Node-to-node Raft RPCs under `/raft/*`: bincode bodies, authenticated by the
//! cluster secret, addressed to one node id, and refused across format versions.
//!
//! The whole `Result` of the local Raft call is encoded in a 200 response; the
//! caller (`network`) turns an `Err` into openraft's `RemoteError`. Refusals before
//! Raft sees the request (secret, target, format, body) are JSON errors with 4xx.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::AppState;
use crate::codec;
use crate::network::{FORMAT_HEADER, SECRET_HEADER, TARGET_HEADER};
use crate::raft_types::TypeConfig;
use openraft::raft::InstallSnapshotRequest;

/// Compares secrets in time independent of where they differ.
fn secrets_match(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Checks the headers, then reads and decodes the body.
async fn admit<T: DeserializeOwned>(app: &AppState, request: Request) -> Result<T, ApiError> {
    let headers = request.headers();
    let secret = headers
        .get(SECRET_HEADER)
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    if !secrets_match(secret, app.cluster_secret.as_bytes()) {
        return Err(ApiError::Unauthorized);
    }
    let target = headers
        .get(TARGET_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if target.parse::<u64>().ok() != Some(app.node_id) {
        return Err(ApiError::WrongNode {
            this: app.node_id,
            target: target.to_owned(),
        });
    }
    let format = headers
        .get(FORMAT_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if format != codec::FORMAT_VERSION.to_string() {
        return Err(ApiError::invalid(
            ErrorCode::FormatMismatch,
            format!(
                "sender format {format:?}, this node speaks {}",
                codec::FORMAT_VERSION
            ),
        ));
    }
    let body = super::extract::body_bytes(request, app.max_raft_body_bytes).await?;
    codec::decode(&body).map_err(|e| ApiError::invalid(ErrorCode::InvalidBody, e.to_string()))
}

fn reply<T: Serialize>(result: &T) -> Response {
    match codec::encode(result) {
        Ok(bytes) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Err(e) => ApiError::Unavailable(format!("encoding the reply: {e}")).into_response(),
    }
}

pub async fn append(State(app): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let request = admit(&app, request).await?;
    Ok(reply(&app.raft.append_entries(request).await))
}

pub async fn vote(State(app): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let request = admit(&app, request).await?;
    Ok(reply(&app.raft.vote(request).await))
}

pub async fn snapshot(State(app): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let request: InstallSnapshotRequest<TypeConfig> = admit(&app, request).await?;
    // Held across the install so the receipt and Raft's buffer move together.
    let mut receipt = app.snapshot_receipt.lock().await;
    let chunk = Chunk {
        snapshot_id: &request.meta.snapshot_id,
        offset: request.offset,
        len: request.data.len() as u64,
    };
    let end = receipt.admit(&chunk, app.limits.max_snapshot_bytes as u64)?;
    let snapshot_id = request.meta.snapshot_id.clone();
    let done = request.done;
    let result = app.raft.install_snapshot(request).await;
    if result.is_ok() {
        receipt.received(snapshot_id, end, done);
    }
    Ok(reply(&result))
}

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
    pub fn admit(&self, chunk: &Chunk<'_>, max_bytes: u64) -> Result<u64, ApiError> {
        let refuse =
            |message: String| Err(ApiError::invalid(ErrorCode::InvalidSnapshotChunk, message));
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
